package ai.prisme.llmgateway.client;

import ai.prisme.llmgateway.v1.ChatCompletionServiceGrpc;
import ai.prisme.llmgateway.v1.ChatMessage;
import ai.prisme.llmgateway.v1.CreateChatCompletionRequest;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.NameResolverRegistry;
import io.grpc.CallOptions;
import io.grpc.Channel;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

/**
 * The Java side of tests/interop/test_orca_balancing.py: unary calls, one at a time, through one channel that
 * balances over the bridges given (a static resolver, as DNS resolves a headless Service) with {@link
 * PrismeChannels#weightedRoundRobin} (or round_robin), counting which bridge answered each. Calls during
 * the settling time are not counted. Prints one JSON line {"host:port": calls, ...}.
 *
 * <p>Arguments: ADDRESSES (comma-separated host:port) POLICY (weighted_round_robin | round_robin)
 * SETTLE_SECONDS CALLS.
 */
public final class WeightedRoundRobinProbe {

  public static void main(String[] args) throws Exception {
    List<InetSocketAddress> addresses = new ArrayList<>();
    for (String address : args[0].split(",")) {
      int colon = address.lastIndexOf(':');
      addresses.add(new InetSocketAddress(address.substring(0, colon), Integer.parseInt(address.substring(colon + 1))));
    }
    String policy = args[1];
    long settleNanos = TimeUnit.SECONDS.toNanos(Long.parseLong(args[2]));
    int calls = Integer.parseInt(args[3]);

    NameResolverRegistry.getDefaultRegistry()
        .register(new PrismeChannelsTest.StaticResolver("bridges", addresses));
    var builder = PrismeChannels.builder("bridges:///pods", PrismeChannels.plaintext());
    if (policy.equals(PrismeChannels.WEIGHTED_ROUND_ROBIN)) {
      builder.defaultServiceConfig(PrismeChannels.weightedRoundRobin(Duration.ofSeconds(1), Duration.ofMillis(100)));
    } else if (!policy.equals("round_robin")) {
      throw new IllegalArgumentException("unknown policy " + policy);
    }
    AtomicReference<SocketAddress> peer = new AtomicReference<>();
    ManagedChannel channel = builder.intercept(new PeerRecorder(peer)).build();
    try {
      var stub = ChatCompletionServiceGrpc.newBlockingStub(channel);
      CreateChatCompletionRequest request =
          CreateChatCompletionRequest.newBuilder()
              .setModel("echo")
              .addMessages(ChatMessage.newBuilder().setRole("user").setContentText("which pod?"))
              .build();
      long settled = System.nanoTime() + settleNanos;
      while (System.nanoTime() < settled) {
        stub.withDeadlineAfter(10, TimeUnit.SECONDS).createChatCompletion(request);
      }
      Map<String, Integer> count = new TreeMap<>();
      for (int i = 0; i < calls; i++) {
        stub.withDeadlineAfter(10, TimeUnit.SECONDS).createChatCompletion(request);
        InetSocketAddress served = (InetSocketAddress) peer.get();
        count.merge(served.getAddress().getHostAddress() + ":" + served.getPort(), 1, Integer::sum);
      }
      StringBuilder json = new StringBuilder("{");
      count.forEach((k, v) -> json.append(json.length() > 1 ? "," : "").append('"').append(k).append("\":").append(v));
      System.out.println(json.append('}'));
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** Records the remote address of each call's transport once its headers arrive. */
  private record PeerRecorder(AtomicReference<SocketAddress> peer) implements ClientInterceptor {
    @Override
    public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
      return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
        @Override
        public void start(Listener<R> listener, Metadata headers) {
          ClientCall<Q, R> call = delegate();
          super.start(
              new io.grpc.ForwardingClientCallListener.SimpleForwardingClientCallListener<>(listener) {
                @Override
                public void onHeaders(Metadata received) {
                  peer.set(call.getAttributes().get(Grpc.TRANSPORT_ATTR_REMOTE_ADDR));
                  super.onHeaders(received);
                }
              },
              headers);
        }
      };
    }
  }
}
