package ai.prisme.llmgateway.client;

import io.grpc.Server;
import io.grpc.ServerServiceDefinition;
import io.grpc.inprocess.InProcessServerBuilder;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/** In-process gRPC servers a test starts, stopped after it ({@code @RegisterExtension}). */
final class InProcessServers implements AfterEachCallback {
  private final List<Server> servers = new ArrayList<>();

  /** Starts a server with {@code services}; returns its in-process name. */
  String start(ServerServiceDefinition... services) throws IOException {
    String name = InProcessServerBuilder.generateName();
    InProcessServerBuilder builder = InProcessServerBuilder.forName(name).directExecutor();
    for (ServerServiceDefinition service : services) {
      builder.addService(service);
    }
    servers.add(builder.build().start());
    return name;
  }

  @Override
  public void afterEach(ExtensionContext context) throws InterruptedException {
    for (Server s : servers) {
      s.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    servers.clear();
  }
}
