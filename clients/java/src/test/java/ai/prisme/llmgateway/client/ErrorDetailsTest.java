package ai.prisme.llmgateway.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;

class ErrorDetailsTest {

  @Test
  void readsErrorInfoRetryInfoAndBadRequest() {
    Throwable e =
        StatusProto.toStatusRuntimeException(
            com.google.rpc.Status.newBuilder()
                .setCode(Code.RESOURCE_EXHAUSTED_VALUE)
                .setMessage("slow down")
                .addDetails(Any.pack(com.google.protobuf.Duration.newBuilder().setSeconds(1).build()))
                .addDetails(
                    Any.pack(ErrorInfo.newBuilder().setReason("UPSTREAM_RATE_LIMITED").putMetadata("httpStatus", "429").build()))
                .addDetails(
                    Any.pack(
                        RetryInfo.newBuilder()
                            .setRetryDelay(com.google.protobuf.Duration.newBuilder().setSeconds(2).setNanos(500_000_000))
                            .build()))
                .addDetails(
                    Any.pack(
                        BadRequest.newBuilder()
                            .addFieldViolations(
                                BadRequest.FieldViolation.newBuilder().setField("model").setDescription("required"))
                            .build()))
                .build());
    assertEquals("UPSTREAM_RATE_LIMITED", ErrorDetails.reason(e));
    assertEquals("429", ErrorDetails.errorInfo(e).orElseThrow().getMetadataOrThrow("httpStatus"));
    assertEquals(Duration.ofMillis(2500), ErrorDetails.retryDelay(e).orElseThrow());
    List<BadRequest.FieldViolation> violations = ErrorDetails.fieldViolations(e);
    assertEquals(1, violations.size());
    assertEquals("model", violations.get(0).getField());
  }

  @Test
  void nothingWithoutDetails() {
    for (Throwable e :
        List.of(Status.INTERNAL.withDescription("boom").asRuntimeException(), new IllegalStateException("x"))) {
      assertEquals("", ErrorDetails.reason(e));
      assertTrue(ErrorDetails.retryDelay(e).isEmpty());
      assertTrue(ErrorDetails.fieldViolations(e).isEmpty());
    }
  }
}
