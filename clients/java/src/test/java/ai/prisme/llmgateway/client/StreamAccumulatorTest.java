package ai.prisme.llmgateway.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.prisme.llmgateway.v1.CreateChatCompletionResponse;
import ai.prisme.llmgateway.v1.StreamChatCompletionResponse;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.util.JsonFormat;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

class StreamAccumulatorTest {

  /** The vectors shared with the Go and Python clients (Maven runs tests from clients/java). */
  static final Path VECTORS = Path.of("..", "testdata", "accumulator");

  record Vector(List<StreamChatCompletionResponse> chunks, CreateChatCompletionResponse expected) {}

  static Vector load(Path path) throws IOException {
    JsonObject json = JsonParser.parseString(Files.readString(path, StandardCharsets.UTF_8)).getAsJsonObject();
    List<StreamChatCompletionResponse> chunks = new ArrayList<>();
    for (JsonElement c : json.getAsJsonArray("chunks")) {
      StreamChatCompletionResponse.Builder b = StreamChatCompletionResponse.newBuilder();
      JsonFormat.parser().merge(c.toString(), b);
      chunks.add(b.build());
    }
    CreateChatCompletionResponse.Builder expected = CreateChatCompletionResponse.newBuilder();
    JsonFormat.parser().merge(json.get("expected").toString(), expected);
    return new Vector(chunks, expected.build());
  }

  @TestFactory
  Stream<DynamicTest> sharedVectors() throws IOException {
    List<Path> paths;
    try (Stream<Path> files = Files.list(VECTORS)) {
      paths = files.filter(p -> p.toString().endsWith(".json")).sorted().toList();
    }
    assertTrue(paths.size() >= 10, "accumulator vectors missing under " + VECTORS.toAbsolutePath());
    return paths.stream()
        .map(
            path ->
                DynamicTest.dynamicTest(
                    path.getFileName().toString(),
                    () -> {
                      Vector v = load(path);
                      StreamAccumulator acc = new StreamAccumulator();
                      v.chunks().forEach(acc::add);
                      assertEquals(JsonFormat.printer().print(v.expected()), JsonFormat.printer().print(acc.response()));
                      assertEquals(v.expected(), acc.response());
                      assertEquals(v.chunks().size(), acc.chunks());
                    }));
  }

  @Test
  void responseIsASnapshot() throws IOException {
    Vector v = load(VECTORS.resolve("n2_interleaved.json"));
    StreamAccumulator acc = new StreamAccumulator();
    v.chunks().subList(0, 4).forEach(acc::add);
    CreateChatCompletionResponse partial = acc.response();
    assertEquals("Hello", partial.getChoices(0).getMessage().getContent());
    assertEquals("Bonjour", partial.getChoices(1).getMessage().getContent());
    v.chunks().subList(4, v.chunks().size()).forEach(acc::add);
    assertEquals("Hello", partial.getChoices(0).getMessage().getContent());
    assertEquals(v.expected(), acc.response());
  }

  @Test
  void accumulateReadsAStreamAndPassesItsErrorOn() throws IOException {
    Vector v = load(VECTORS.resolve("content.json"));
    assertEquals(v.expected(), StreamAccumulator.accumulate(v.chunks().iterator()));
    Iterator<StreamChatCompletionResponse> failing =
        new Iterator<>() {
          private final Iterator<StreamChatCompletionResponse> it = v.chunks().subList(0, 3).iterator();

          @Override
          public boolean hasNext() {
            if (!it.hasNext()) {
              throw Status.UNAVAILABLE.withDescription("upstream closed the stream early").asRuntimeException();
            }
            return true;
          }

          @Override
          public StreamChatCompletionResponse next() {
            return it.next();
          }
        };
    StatusRuntimeException e =
        assertThrows(StatusRuntimeException.class, () -> StreamAccumulator.accumulate(failing));
    assertEquals(Status.Code.UNAVAILABLE, e.getStatus().getCode());
  }
}
