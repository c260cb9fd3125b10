package ai.prisme.llmgateway.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.prisme.llmgateway.v1.ChatCompletionServiceGrpc;
import ai.prisme.llmgateway.v1.CreateChatCompletionRequest;
import ai.prisme.llmgateway.v1.CreateChatCompletionResponse;
import io.grpc.Contexts;
import io.grpc.EquivalentAddressGroup;
import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.NameResolver;
import io.grpc.NameResolverProvider;
import io.grpc.NameResolverRegistry;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.services.MetricRecorder;
import io.grpc.stub.StreamObserver;
import io.grpc.xds.orca.OrcaMetricReportingServerInterceptor;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class PrismeChannelsTest {

  /** The bridge's server policy (bridge/server.py): pings at most every 10 s, also without calls. */
  static final Duration BRIDGE_MIN_PING_INTERVAL = Duration.ofSeconds(10);

  /** Answers with its name as the model; records the authorization header of each call. */
  static final class Recorder extends ChatCompletionServiceGrpc.ChatCompletionServiceImplBase {
    final String name;
    final List<String> authorizations = new CopyOnWriteArrayList<>();

    Recorder(String name) {
      this.name = name;
    }

    @Override
    public void createChatCompletion(
        CreateChatCompletionRequest req, StreamObserver<CreateChatCompletionResponse> obs) {
      obs.onNext(CreateChatCompletionResponse.newBuilder().setModel(name).build());
      obs.onCompleted();
    }

    ServerInterceptor recordHeaders() {
      return new ServerInterceptor() {
        @Override
        public <Q, R> ServerCall.Listener<Q> interceptCall(
            ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
          String auth = headers.get(BearerCredentials.AUTHORIZATION);
          authorizations.add(auth == null ? "" : auth);
          return Contexts.interceptCall(io.grpc.Context.current(), call, headers, next);
        }
      };
    }
  }

  /** Resolves "scheme:///anything" to fixed addresses, as DNS resolves a headless Service to its pods. */
  static final class StaticResolver extends NameResolverProvider {
    final String scheme;
    final List<EquivalentAddressGroup> addresses;

    StaticResolver(String scheme, List<InetSocketAddress> addresses) {
      this.scheme = scheme;
      this.addresses = addresses.stream().map(EquivalentAddressGroup::new).toList();
    }

    @Override
    protected boolean isAvailable() {
      return true;
    }

    @Override
    protected int priority() {
      return 5;
    }

    @Override
    public String getDefaultScheme() {
      return scheme;
    }

    @Override
    public NameResolver newNameResolver(URI uri, NameResolver.Args args) {
      if (!scheme.equals(uri.getScheme())) {
        return null;
      }
      return new NameResolver() {
        @Override
        public String getServiceAuthority() {
          return "bridge.test";
        }

        @Override
        public void start(Listener2 listener) {
          listener.onResult(ResolutionResult.newBuilder().setAddresses(addresses).build());
        }

        @Override
        public void shutdown() {}
      };
    }
  }

  private final List<Server> servers = new ArrayList<>();
  private final List<ManagedChannel> channels = new ArrayList<>();
  private final List<NameResolverProvider> resolvers = new ArrayList<>();

  @AfterEach
  void cleanUp() throws InterruptedException {
    for (ManagedChannel c : channels) {
      c.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    for (Server s : servers) {
      s.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    resolvers.forEach(NameResolverRegistry.getDefaultRegistry()::deregister);
  }

  private InetSocketAddress serve(Recorder r, ServerInterceptor... more) throws IOException {
    List<ServerInterceptor> interceptors = new ArrayList<>(List.of(more));
    interceptors.add(r.recordHeaders());
    Server s =
        Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
            .addService(ServerInterceptors.intercept(r, interceptors))
            .build()
            .start();
    servers.add(s);
    return new InetSocketAddress("127.0.0.1", s.getPort());
  }

  private ChatCompletionServiceGrpc.ChatCompletionServiceBlockingStub stub(ManagedChannel channel) {
    channels.add(channel);
    return ChatCompletionServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);
  }

  @Test
  void keepaliveWithinTheBridgePolicy() {
    assertTrue(PrismeChannels.KEEPALIVE_TIME.compareTo(BRIDGE_MIN_PING_INTERVAL) >= 0);
    assertFalse(PrismeChannels.KEEPALIVE_TIMEOUT.isZero());
  }

  private Set<String> answeredBy(String scheme, Map<String, ?> serviceConfig) throws Exception {
    List<InetSocketAddress> addresses = List.of(serve(new Recorder("a")), serve(new Recorder("b")));
    StaticResolver resolver = new StaticResolver(scheme, addresses);
    NameResolverRegistry.getDefaultRegistry().register(resolver);
    resolvers.add(resolver);
    var builder = PrismeChannels.builder(scheme + ":///bridge", PrismeChannels.plaintext());
    if (serviceConfig != null) {
      builder.defaultServiceConfig(serviceConfig);
    }
    var stub = stub(builder.build());
    // Calls until both answered, at most 200 over about 2 s: round_robin uses a pod once its connection is
    // ready; pick_first never leaves the first.
    Set<String> seen = new HashSet<>();
    for (int i = 0; i < 200 && seen.size() < 2; i++) {
      if (i > 0) {
        Thread.sleep(10);
      }
      seen.add(stub.createChatCompletion(CreateChatCompletionRequest.getDefaultInstance()).getModel());
    }
    return seen;
  }

  @Test
  void roundRobinSpreadsCallsOverEveryAddress() throws Exception {
    assertEquals(Set.of("a", "b"), answeredBy("prismetestrr", null));
  }

  @Test
  void weightedRoundRobinServiceConfig() {
    assertEquals(
        Map.of(
            "loadBalancingConfig",
            List.of(Map.of("weighted_round_robin", Map.of()), Map.of("round_robin", Map.of()))),
        PrismeChannels.weightedRoundRobin());
    assertEquals(
        Map.of(
            "loadBalancingConfig",
            List.of(
                Map.of("weighted_round_robin", Map.of("blackoutPeriod", "1s", "weightUpdatePeriod", "0.1s")),
                Map.of("round_robin", Map.of()))),
        PrismeChannels.weightedRoundRobin(Duration.ofSeconds(1), Duration.ofMillis(100)));
  }

  /**
   * Two servers report their load per call (grpc-java's own ORCA server side here; the bridge in
   * tests/interop/test_orca_balancing.py): the one that says it is busy gets few calls once the weights
   * apply.
   */
  @Test
  void weightedRoundRobinFollowsReportedLoad() throws Exception {
    List<InetSocketAddress> addresses = new ArrayList<>();
    for (var load : Map.of("busy", 0.9, "idle", 0.05).entrySet()) {
      MetricRecorder metrics = MetricRecorder.newInstance();
      metrics.setApplicationUtilizationMetric(load.getValue());
      metrics.setQpsMetric(10);
      addresses.add(serve(new Recorder(load.getKey()), OrcaMetricReportingServerInterceptor.create(metrics)));
    }
    StaticResolver resolver = new StaticResolver("prismetestwrr", addresses);
    NameResolverRegistry.getDefaultRegistry().register(resolver);
    resolvers.add(resolver);
    var stub =
        stub(
            PrismeChannels.builder("prismetestwrr:///bridge", PrismeChannels.plaintext())
                .defaultServiceConfig(
                    PrismeChannels.weightedRoundRobin(Duration.ofMillis(10), Duration.ofMillis(100)))
                .build());
    // Until the weights apply (both reported, past the blackout, recomputed), calls go round robin.
    long settled = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
    while (System.nanoTime() < settled) {
      stub.createChatCompletion(CreateChatCompletionRequest.getDefaultInstance());
    }
    Map<String, Integer> count = new java.util.TreeMap<>();
    for (int i = 0; i < 200; i++) {
      count.merge(stub.createChatCompletion(CreateChatCompletionRequest.getDefaultInstance()).getModel(), 1, Integer::sum);
    }
    // Weights 10/0.05 against 10/0.9: 18 to 1, so about 95 % of the calls; 70 % leaves room.
    assertTrue(count.getOrDefault("idle", 0) >= 140, "calls per server: " + count);
  }

  @Test
  void callerMayOverrideTheServiceConfig() throws Exception {
    Map<String, ?> pickFirst = Map.of("loadBalancingConfig", List.of(Map.of("pick_first", Map.of())));
    assertEquals(1, answeredBy("prismetestpf", pickFirst).size());
  }

  @Test
  void bearerIsRefusedOverPlaintextUnlessAllowed() throws Exception {
    Recorder r = new Recorder("a");
    InetSocketAddress address = serve(r);
    var stub = stub(PrismeChannels.builder("127.0.0.1:" + address.getPort(), PrismeChannels.plaintext()).build());
    BearerCredentials bearer = BearerCredentials.of("iak_secret");
    StatusRuntimeException e =
        assertThrows(
            StatusRuntimeException.class,
            () -> stub.withCallCredentials(bearer).createChatCompletion(CreateChatCompletionRequest.getDefaultInstance()));
    assertEquals(Status.Code.UNAUTHENTICATED, e.getStatus().getCode());
    assertTrue(r.authorizations.isEmpty(), "the server received the call");
    stub.withCallCredentials(bearer.allowingPlaintext())
        .createChatCompletion(CreateChatCompletionRequest.getDefaultInstance());
    assertEquals(List.of("Bearer iak_secret"), r.authorizations);
  }

  @Test
  void bearerNeverShowsTheToken() {
    assertFalse(BearerCredentials.of("iak_secret").toString().contains("iak_secret"));
    assertFalse(BearerCredentials.of("iak_secret").allowingPlaintext().toString().contains("iak_secret"));
    assertThrows(IllegalArgumentException.class, () -> BearerCredentials.of(""));
    assertThrows(IllegalArgumentException.class, () -> BearerCredentials.of("a\nb"));
  }
}
