package ai.prisme.llmgateway.client;

import ai.prisme.llmgateway.client.PrismeChat.Options;
import io.grpc.ManagedChannel;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.function.Function;

/** Exit status, stdout and stderr of one run of the prisme-chat command line, for the tests. */
record CliRun(int code, String out, String err) {

  static CliRun of(Function<Options, ManagedChannel> channels, String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int code =
        PrismeChat.run(
            args,
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8),
            channels);
    return new CliRun(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }
}
