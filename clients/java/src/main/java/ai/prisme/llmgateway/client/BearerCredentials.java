package ai.prisme.llmgateway.client;

import io.grpc.CallCredentials;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import java.util.concurrent.Executor;

/**
 * A bearer token (session JWT or iak_ key) sent as {@code authorization: Bearer TOKEN} metadata, per call:
 * {@code stub.withCallCredentials(BearerCredentials.of(token))}.
 *
 * <p>A token is a secret, so by default a call on a connection without privacy (plaintext) fails with
 * UNAUTHENTICATED before anything is sent; {@link #allowingPlaintext()} lifts that for trusted networks
 * (loopback, a sidecar, a mesh that encrypts). {@link #toString()} never shows the token.
 */
public final class BearerCredentials extends CallCredentials {

  static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final String token;
  private final boolean allowPlaintext;

  private BearerCredentials(String token, boolean allowPlaintext) {
    this.token = token;
    this.allowPlaintext = allowPlaintext;
  }

  /** Credentials for {@code token}, which must be non-empty and on one line. */
  public static BearerCredentials of(String token) {
    if (token == null || token.isEmpty() || token.contains("\n") || token.contains("\r")) {
      throw new IllegalArgumentException("a bearer token must be non-empty and on one line");
    }
    return new BearerCredentials(token, false);
  }

  /** A copy that may also be sent over plaintext connections. */
  public BearerCredentials allowingPlaintext() {
    return new BearerCredentials(token, true);
  }

  @Override
  public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
    if (info.getSecurityLevel() != SecurityLevel.PRIVACY_AND_INTEGRITY && !allowPlaintext) {
      applier.fail(
          Status.UNAUTHENTICATED.withDescription(
              "refusing to send a bearer token over a connection without privacy (plaintext): use TLS, or"
                  + " BearerCredentials.allowingPlaintext() on a trusted network"));
      return;
    }
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, "Bearer " + token);
    applier.apply(headers);
  }

  @Override
  public String toString() {
    return allowPlaintext ? "BearerCredentials(***, plaintext allowed)" : "BearerCredentials(***)";
  }
}
