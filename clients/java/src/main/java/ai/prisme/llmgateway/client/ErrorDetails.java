package ai.prisme.llmgateway.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.List;
import java.util.Optional;

/**
 * The google.rpc details of a failed call (the {@code grpc-status-details-bin} trailer): what the bridge
 * sends with its errors. Each method takes the exception a stub threw (a StatusRuntimeException) and finds
 * nothing in any other throwable.
 */
public final class ErrorDetails {

  private ErrorDetails() {}

  /** The ErrorInfo detail: reason (e.g. UPSTREAM_RATE_LIMITED), domain and metadata. */
  public static Optional<ErrorInfo> errorInfo(Throwable t) {
    return first(t, ErrorInfo.class);
  }

  /** ErrorInfo's reason, or "" when the call carried no ErrorInfo. */
  public static String reason(Throwable t) {
    return errorInfo(t).map(ErrorInfo::getReason).orElse("");
  }

  /** How long the server asked to wait before retrying (RetryInfo), if it said. */
  public static Optional<Duration> retryDelay(Throwable t) {
    return first(t, RetryInfo.class)
        .filter(RetryInfo::hasRetryDelay)
        .map(r -> Duration.ofSeconds(r.getRetryDelay().getSeconds(), r.getRetryDelay().getNanos()));
  }

  /** The BadRequest field violations (request field path and what is wrong), empty without any. */
  public static List<BadRequest.FieldViolation> fieldViolations(Throwable t) {
    return first(t, BadRequest.class).map(BadRequest::getFieldViolationsList).orElse(List.of());
  }

  private static <T extends Message> Optional<T> first(Throwable t, Class<T> type) {
    com.google.rpc.Status status = StatusProto.fromThrowable(t);
    if (status == null) {
      return Optional.empty();
    }
    for (Any any : status.getDetailsList()) {
      if (any.is(type)) {
        try {
          return Optional.of(any.unpack(type));
        } catch (InvalidProtocolBufferException e) {
          return Optional.empty(); // a detail that claims the type but does not decode
        }
      }
    }
    return Optional.empty();
  }
}
