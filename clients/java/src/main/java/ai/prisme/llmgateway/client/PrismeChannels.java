package ai.prisme.llmgateway.client;

import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.LoadBalancerRegistry;
import io.grpc.ManagedChannelBuilder;
import io.grpc.TlsChannelCredentials;
import java.math.BigDecimal;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Channels to the prisme-grpc-bridge: keepalive settings the bridge accepts, round_robin load balancing for
 * a headless Kubernetes Service, and explicit transport security.
 *
 * <pre>{@code
 * ManagedChannel channel =
 *     PrismeChannels.builder("dns:///prisme-bridge.ai.svc.cluster.local:50051", PrismeChannels.plaintext())
 *         .build();
 * }</pre>
 *
 * <p>To weight the pods by the load each one reports (the bridge's ORCA reports), set {@link
 * #weightedRoundRobin()} as the default service config; it needs {@code io.grpc:grpc-xds} at run time:
 *
 * <pre>{@code
 * ManagedChannel channel =
 *     PrismeChannels.builder(target, PrismeChannels.tls())
 *         .defaultServiceConfig(PrismeChannels.weightedRoundRobin())
 *         .build();
 * }</pre>
 */
public final class PrismeChannels {

  /**
   * Interval of client keepalive pings. The bridge accepts a ping every 10 s, also while no call runs; 30 s
   * keeps a margin and still notices a dead peer, or a connection a NAT dropped, within 40 s.
   */
  public static final Duration KEEPALIVE_TIME = Duration.ofSeconds(30);

  /** How long a keepalive ping may go unanswered before the connection is closed. */
  public static final Duration KEEPALIVE_TIMEOUT = Duration.ofSeconds(10);

  /** Largest message received: requests and replies can carry images as data: URLs (the bridge: 64 MiB). */
  public static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

  /**
   * round_robin: a dns:/// target naming a headless Service resolves to every pod; round_robin keeps a
   * connection to each and spreads the calls, where the default pick_first would use one pod.
   */
  public static final Map<String, ?> SERVICE_CONFIG =
      Map.of("loadBalancingConfig", List.of(Map.of("round_robin", Map.of())));

  /** The load balancing policy of {@link #weightedRoundRobin()} (gRFC A58). */
  public static final String WEIGHTED_ROUND_ROBIN = "weighted_round_robin";

  private PrismeChannels() {}

  /**
   * The service config of weighted_round_robin with grpc's defaults (weights used 10 s after a pod first
   * reports, recomputed every second): each pod gets calls in proportion to the rate it serves over the
   * utilization it reports, so a pod holding many long streams, or near its --max-concurrent-rpcs, gets
   * fewer new calls than round_robin would give it.
   *
   * @throws IllegalStateException if the balancer is not on the class path (add io.grpc:grpc-xds)
   */
  public static Map<String, ?> weightedRoundRobin() {
    return weightedRoundRobin(null, null);
  }

  /**
   * weighted_round_robin, its weights used {@code blackoutPeriod} after a pod first reports and recomputed
   * every {@code weightUpdatePeriod} (at least 100 ms); null keeps grpc's default (10 s, 1 s).
   *
   * @throws IllegalStateException if the balancer is not on the class path (add io.grpc:grpc-xds)
   */
  public static Map<String, ?> weightedRoundRobin(Duration blackoutPeriod, Duration weightUpdatePeriod) {
    if (LoadBalancerRegistry.getDefaultRegistry().getProvider(WEIGHTED_ROUND_ROBIN) == null) {
      throw new IllegalStateException(
          WEIGHTED_ROUND_ROBIN
              + " is not available: add io.grpc:grpc-xds (the version of your io.grpc artifacts) to the"
              + " runtime class path");
    }
    Map<String, Object> policy = new LinkedHashMap<>();
    if (blackoutPeriod != null) {
      policy.put("blackoutPeriod", durationJson(blackoutPeriod));
    }
    if (weightUpdatePeriod != null) {
      policy.put("weightUpdatePeriod", durationJson(weightUpdatePeriod));
    }
    return Map.of(
        "loadBalancingConfig", List.of(Map.of(WEIGHTED_ROUND_ROBIN, policy), Map.of("round_robin", Map.of())));
  }

  /** A google.protobuf.Duration as JSON: seconds with a fraction, "1.5s". */
  private static String durationJson(Duration duration) {
    BigDecimal seconds = BigDecimal.valueOf(duration.getSeconds()).add(BigDecimal.valueOf(duration.getNano(), 9));
    return seconds.stripTrailingZeros().toPlainString() + "s";
  }

  /**
   * Plaintext (h2c): for loopback, a sidecar or a mesh that encrypts. A {@link BearerCredentials} token is
   * not sent over it unless it allows plaintext.
   */
  public static ChannelCredentials plaintext() {
    return InsecureChannelCredentials.create();
  }

  /** TLS with the JDK's trusted roots. */
  public static ChannelCredentials tls() {
    return TlsChannelCredentials.create();
  }

  /**
   * A channel builder for {@code target} ("host:port", or "dns:///name.namespace.svc:50051") with keepalive,
   * round_robin and the message size limit set; the caller may change any of them before {@code build()}.
   */
  public static ManagedChannelBuilder<?> builder(String target, ChannelCredentials credentials) {
    return Grpc.newChannelBuilder(target, credentials)
        .keepAliveTime(KEEPALIVE_TIME.toMillis(), TimeUnit.MILLISECONDS)
        .keepAliveTimeout(KEEPALIVE_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)
        .keepAliveWithoutCalls(true)
        .defaultServiceConfig(SERVICE_CONFIG)
        .maxInboundMessageSize(MAX_MESSAGE_BYTES);
  }
}
