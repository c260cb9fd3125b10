package ai.prisme.llmgateway.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.prisme.llmgateway.v1.ChatCompletionChoice;
import ai.prisme.llmgateway.v1.ChatCompletionChunkChoice;
import ai.prisme.llmgateway.v1.ChatCompletionDelta;
import ai.prisme.llmgateway.v1.ChatCompletionMessage;
import ai.prisme.llmgateway.v1.ChatCompletionServiceGrpc;
import ai.prisme.llmgateway.v1.CreateChatCompletionRequest;
import ai.prisme.llmgateway.v1.CreateChatCompletionResponse;
import ai.prisme.llmgateway.v1.StreamChatCompletionResponse;
import ai.prisme.llmgateway.v1.Usage;
import com.google.protobuf.Any;
import com.google.protobuf.Duration;
import com.google.protobuf.util.JsonFormat;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class PrismeChatTest {

  private static final Metadata.Key<String> REQUEST_ID =
      Metadata.Key.of("x-request-id", Metadata.ASCII_STRING_MARSHALLER);
  private static final Context.Key<Metadata> HEADERS_CTX = Context.key("headers");

  /** Canned answers; records the last request and its metadata. */
  static final class FakeService extends ChatCompletionServiceGrpc.ChatCompletionServiceImplBase {
    volatile CreateChatCompletionRequest lastRequest;
    volatile Metadata lastHeaders;
    StatusRuntimeException unaryError; // returned by CreateChatCompletion when set
    StatusRuntimeException streamError; // ends StreamChatCompletion after 3 chunks when set
    long delayMs;

    @Override
    public void createChatCompletion(
        CreateChatCompletionRequest req, StreamObserver<CreateChatCompletionResponse> obs) {
      lastRequest = req;
      lastHeaders = HEADERS_CTX.get();
      if (delayMs > 0) {
        try {
          Thread.sleep(delayMs);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
      }
      if (unaryError != null) {
        obs.onError(unaryError);
        return;
      }
      obs.onNext(
          CreateChatCompletionResponse.newBuilder()
              .setId("chatcmpl-1")
              .setObject("chat.completion")
              .setCreated(1700000000L)
              .setModel(req.getModel())
              .addChoices(
                  ChatCompletionChoice.newBuilder()
                      .setIndex(0)
                      .setMessage(
                          ChatCompletionMessage.newBuilder().setRole("assistant").setContent("Hello there!"))
                      .setFinishReason("stop"))
              .setUsage(Usage.newBuilder().setPromptTokens(5).setCompletionTokens(3).setTotalTokens(8))
              .build());
      obs.onCompleted();
    }

    @Override
    public void streamChatCompletion(
        CreateChatCompletionRequest req, StreamObserver<StreamChatCompletionResponse> obs) {
      lastRequest = req;
      lastHeaders = HEADERS_CTX.get();
      List<StreamChatCompletionResponse> chunks = new ArrayList<>();
      chunks.add(chunk(req, ChatCompletionDelta.newBuilder().setRole("assistant").setContent(""), null));
      chunks.add(chunk(req, ChatCompletionDelta.newBuilder().setContent("One, "), null));
      chunks.add(chunk(req, ChatCompletionDelta.newBuilder().setContent("two, "), null));
      if (streamError == null) {
        chunks.add(chunk(req, ChatCompletionDelta.newBuilder().setContent("three."), null));
        chunks.add(chunk(req, ChatCompletionDelta.newBuilder(), "stop"));
        if (req.getStreamOptions().getIncludeUsage()) {
          chunks.add(
              base(req)
                  .setUsage(Usage.newBuilder().setPromptTokens(7).setCompletionTokens(4).setTotalTokens(11))
                  .build());
        }
      }
      chunks.forEach(obs::onNext);
      if (streamError != null) {
        obs.onError(streamError);
      } else {
        obs.onCompleted();
      }
    }

    private static StreamChatCompletionResponse.Builder base(CreateChatCompletionRequest req) {
      return StreamChatCompletionResponse.newBuilder()
          .setId("chatcmpl-2")
          .setObject("chat.completion.chunk")
          .setCreated(1700000001L)
          .setModel(req.getModel());
    }

    private static StreamChatCompletionResponse chunk(
        CreateChatCompletionRequest req, ChatCompletionDelta.Builder delta, String finish) {
      ChatCompletionChunkChoice.Builder c = ChatCompletionChunkChoice.newBuilder().setIndex(0).setDelta(delta);
      if (finish != null) {
        c.setFinishReason(finish);
      }
      return base(req).addChoices(c).build();
    }
  }

  /** Puts the request headers in the Context, and sends response header/trailer metadata. */
  static final class MetadataInterceptor implements ServerInterceptor {
    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(
        ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
      ServerCall<Q, R> wrapped =
          new io.grpc.ForwardingServerCall.SimpleForwardingServerCall<>(call) {
            @Override
            public void sendHeaders(Metadata responseHeaders) {
              responseHeaders.put(REQUEST_ID, "req-42");
              super.sendHeaders(responseHeaders);
            }

            @Override
            public void close(Status status, Metadata trailers) {
              trailers.put(Metadata.Key.of("x-upstream-ms", Metadata.ASCII_STRING_MARSHALLER), "12");
              super.close(status, trailers);
            }
          };
      return Contexts.interceptCall(Context.current().withValue(HEADERS_CTX, headers), wrapped, headers, next);
    }
  }

  private final List<Server> servers = new ArrayList<>();

  @AfterEach
  void stopServers() throws InterruptedException {
    for (Server s : servers) {
      s.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** Exit status, stdout and stderr of one run. */
  record Result(int code, String out, String err) {}

  private Result run(FakeService fake, String... args) throws Exception {
    String name = InProcessServerBuilder.generateName();
    servers.add(
        InProcessServerBuilder.forName(name)
            .directExecutor()
            .addService(ServerInterceptors.intercept(fake, new MetadataInterceptor()))
            .build()
            .start());
    CliRun r = CliRun.of(o -> InProcessChannelBuilder.forName(name).build(), args);
    return new Result(r.code(), r.out(), r.err());
  }

  /**
   * A status exactly as the bridge sends it: clients/testdata/errors/NAME.json, written by the bridge's own
   * code (tests/client_fixtures.py), so this fake sends the ErrorInfo keys docs/errors.md names.
   */
  private static StatusRuntimeException bridgeError(String name) throws IOException {
    String json =
        Files.readString(Path.of("..", "testdata", "errors", name + ".json"), StandardCharsets.UTF_8);
    JsonFormat.TypeRegistry types =
        JsonFormat.TypeRegistry.newBuilder()
            .add(ErrorInfo.getDescriptor())
            .add(RetryInfo.getDescriptor())
            .add(BadRequest.getDescriptor())
            .build();
    com.google.rpc.Status.Builder status = com.google.rpc.Status.newBuilder();
    JsonFormat.parser().usingTypeRegistry(types).merge(json, status);
    return StatusProto.toStatusRuntimeException(status.build());
  }

  @Test
  void unaryPrintsTextAndSendsRequestAndMetadata() throws Exception {
    FakeService fake = new FakeService();
    Result r =
        run(fake, "--model", "gpt-4o", "--prompt", "Say hello", "--api-key", "iak_secret",
            "--metadata", "x-correlation-id=abc", "--metadata=X-Team=search=1");
    assertEquals(0, r.code(), r.err());
    assertEquals("Hello there!\n", r.out());
    assertEquals("", r.err());
    CreateChatCompletionRequest req = fake.lastRequest;
    assertEquals("gpt-4o", req.getModel());
    assertEquals(1, req.getMessagesCount());
    assertEquals("user", req.getMessages(0).getRole());
    assertEquals("Say hello", req.getMessages(0).getContentText());
    assertFalse(req.getMessages(0).hasContent());
    assertFalse(req.hasStreamOptions());
    assertEquals(
        "Bearer iak_secret",
        fake.lastHeaders.get(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER)));
    assertEquals("abc", fake.lastHeaders.get(Metadata.Key.of("x-correlation-id", Metadata.ASCII_STRING_MARSHALLER)));
    assertEquals("search=1", fake.lastHeaders.get(Metadata.Key.of("x-team", Metadata.ASCII_STRING_MARSHALLER)));
  }

  @Test
  void noApiKeySendsNoAuthorization() throws Exception {
    FakeService fake = new FakeService();
    Result r = run(fake, "--model", "m", "--prompt", "p");
    assertEquals(0, r.code(), r.err());
    assertNull(fake.lastHeaders.get(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER)));
  }

  @Test
  void unaryJsonIsOneCompactLineWithProtoNames() throws Exception {
    Result r = run(new FakeService(), "--model", "gpt-4o", "--prompt", "hi", "--json", "--include-usage");
    assertEquals(0, r.code(), r.err());
    String[] lines = r.out().split("\n");
    assertEquals(1, lines.length, r.out());
    assertEquals(
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":\"1700000000\",\"model\":\"gpt-4o\","
            + "\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"Hello there!\"},\"finish_reason\":\"stop\"}],"
            + "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}",
        lines[0]);
    CreateChatCompletionResponse.Builder parsed = CreateChatCompletionResponse.newBuilder();
    JsonFormat.parser().merge(lines[0], parsed);
    assertEquals("Hello there!", parsed.getChoices(0).getMessage().getContent());
    assertEquals("", r.err());
  }

  @Test
  void unaryUsageGoesToStderr() throws Exception {
    Result r = run(new FakeService(), "--model", "m", "--prompt", "p", "--include-usage");
    assertEquals(0, r.code(), r.err());
    assertEquals("Hello there!\n", r.out());
    assertEquals("usage: prompt_tokens=5 completion_tokens=3 total_tokens=8\n", r.err());
  }

  @Test
  void verbosePrintsHeadersAndTrailers() throws Exception {
    Result r = run(new FakeService(), "--model", "m", "--prompt", "p", "-v");
    assertEquals(0, r.code(), r.err());
    assertTrue(r.err().contains("header x-request-id: req-42\n"), r.err());
    assertTrue(r.err().contains("trailer x-upstream-ms: 12\n"), r.err());
  }

  @Test
  void streamConcatenatesDeltas() throws Exception {
    FakeService fake = new FakeService();
    Result r = run(fake, "--model", "gpt-4o", "--prompt", "count", "--stream", "--include-usage", "--verbose");
    assertEquals(0, r.code(), r.err());
    assertEquals("One, two, three.\n", r.out());
    assertTrue(fake.lastRequest.getStreamOptions().getIncludeUsage());
    assertTrue(r.err().contains("header x-request-id: req-42\n"), r.err());
    assertTrue(r.err().contains("usage: prompt_tokens=7 completion_tokens=4 total_tokens=11\n"), r.err());
  }

  @Test
  void streamWithoutIncludeUsage() throws Exception {
    FakeService fake = new FakeService();
    Result r = run(fake, "--model", "m", "--prompt", "p", "--stream");
    assertEquals(0, r.code(), r.err());
    assertEquals("One, two, three.\n", r.out());
    assertEquals("", r.err());
    assertFalse(fake.lastRequest.hasStreamOptions());
  }

  @Test
  void streamJsonOneLinePerChunk() throws Exception {
    Result r = run(new FakeService(), "--model", "m", "--prompt", "p", "--stream", "--json", "--include-usage");
    assertEquals(0, r.code(), r.err());
    String[] lines = r.out().split("\n");
    assertEquals(6, lines.length, r.out()); // role, 3 content, finish, usage
    StringBuilder text = new StringBuilder();
    for (String line : lines) {
      StreamChatCompletionResponse.Builder chunk = StreamChatCompletionResponse.newBuilder();
      JsonFormat.parser().merge(line, chunk);
      chunk.getChoicesList().forEach(c -> text.append(c.getDelta().getContent()));
    }
    assertEquals("One, two, three.", text.toString());
    assertEquals(
        "{\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"created\":\"1700000001\",\"model\":\"m\","
            + "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":4,\"total_tokens\":11}}",
        lines[5]);
    assertEquals(
        "{\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"created\":\"1700000001\",\"model\":\"m\","
            + "\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}",
        lines[4]);
  }

  @Test
  void streamAccumulatePrintsTheFoldedReply() throws Exception {
    Result r = run(new FakeService(), "--model", "m", "--prompt", "p", "--stream", "--accumulate", "--include-usage");
    assertEquals(0, r.code(), r.err());
    assertEquals("One, two, three.\n", r.out());
    assertEquals("usage: prompt_tokens=7 completion_tokens=4 total_tokens=11\n", r.err());
    r = run(new FakeService(), "--model", "m", "--prompt", "p", "--stream", "--accumulate", "--json", "--include-usage");
    assertEquals(0, r.code(), r.err());
    assertEquals(
        "{\"id\":\"chatcmpl-2\",\"object\":\"chat.completion\",\"created\":\"1700000001\",\"model\":\"m\","
            + "\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"One, two, three.\"},\"finish_reason\":\"stop\"}],"
            + "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":4,\"total_tokens\":11}}\n",
        r.out());
  }

  @Test
  void streamAccumulateError() throws Exception {
    FakeService fake = new FakeService();
    fake.streamError = Status.UNAVAILABLE.withDescription("upstream closed the stream early").asRuntimeException();
    Result r = run(fake, "--model", "m", "--prompt", "p", "--stream", "--accumulate");
    assertEquals(1, r.code());
    assertEquals("", r.out());
    assertEquals("UNAVAILABLE: upstream closed the stream early\ngrpc-status: UNAVAILABLE\n", r.err());
  }

  @Test
  void unaryErrorPrintsDetailsAndStatus() throws Exception {
    Map<String, String> expected =
        Map.of(
            "upstream_rate_limited",
            "RESOURCE_EXHAUSTED: upstream HTTP 429: Rate limit exceeded: 100 requests per 60 s\n"
                + "error_info: reason=UPSTREAM_RATE_LIMITED domain=grpc-bridge.prisme.ai"
                + " metadata={correlationId=corr-42, httpStatus=429, upstreamCode=rate_limit_exceeded,"
                + " upstreamHost=gateway.example.com}\n"
                + "retry_info: retry_delay=3s\n"
                + "grpc-status: RESOURCE_EXHAUSTED\n",
            "upstream_invalid_request",
            "INVALID_ARGUMENT: upstream HTTP 400: messages[0].content must not be empty\n"
                + "error_info: reason=UPSTREAM_INVALID_REQUEST domain=grpc-bridge.prisme.ai"
                + " metadata={correlationId=req-7, httpStatus=400, upstreamCode=invalid_value,"
                + " upstreamHost=gateway.example.com, upstreamParam=messages[0].content,"
                + " upstreamType=invalid_request_error}\n"
                + "bad_request: field=messages[0].content"
                + " description=messages[0].content must not be empty\n"
                + "grpc-status: INVALID_ARGUMENT\n",
            "caller_credentials_required",
            "UNAUTHENTICATED: no credentials: this bridge uses its own upstream key only for callers it"
                + " authenticated with an allowed client certificate (mTLS): send your own credentials as"
                + " 'authorization: Bearer <token or iak_ key>' or 'x-prismeai-api-key: <iak_ key>' metadata\n"
                + "error_info: reason=CALLER_CREDENTIALS_REQUIRED domain=grpc-bridge.prisme.ai metadata={}\n"
                + "grpc-status: UNAUTHENTICATED\n",
            "caller_not_allowed",
            "PERMISSION_DENIED: client certificate spiffe://cluster.local/ns/team-b/sa/reports may not call"
                + " this bridge: its identity is not in the bridge's allow-list (--tls-client-allow); ask the"
                + " bridge's operator to add it\n"
                + "error_info: reason=CALLER_NOT_ALLOWED domain=grpc-bridge.prisme.ai"
                + " metadata={callerIdentity=spiffe://cluster.local/ns/team-b/sa/reports}\n"
                + "grpc-status: PERMISSION_DENIED\n");
    for (Map.Entry<String, String> each : expected.entrySet()) {
      FakeService fake = new FakeService();
      fake.unaryError = bridgeError(each.getKey());
      Result r = run(fake, "--model", "m", "--prompt", "p");
      assertEquals(1, r.code(), each.getKey());
      assertEquals("", r.out(), each.getKey());
      assertEquals(each.getValue(), r.err(), each.getKey());
    }
  }

  @Test
  void streamErrorAfterChunks() throws Exception {
    FakeService fake = new FakeService();
    fake.streamError = Status.UNAVAILABLE.withDescription("upstream closed the stream early").asRuntimeException();
    Result r = run(fake, "--model", "m", "--prompt", "p", "--stream");
    assertEquals(1, r.code());
    assertEquals("One, two, \n", r.out());
    assertEquals("UNAVAILABLE: upstream closed the stream early\ngrpc-status: UNAVAILABLE\n", r.err());
  }

  @Test
  void unknownDetailTypeIsNamed() throws Exception {
    FakeService fake = new FakeService();
    fake.unaryError =
        StatusProto.toStatusRuntimeException(
            com.google.rpc.Status.newBuilder()
                .setCode(Code.INTERNAL_VALUE)
                .setMessage("boom")
                .addDetails(Any.pack(Duration.newBuilder().setSeconds(1).build()))
                .build());
    Result r = run(fake, "--model", "m", "--prompt", "p");
    assertEquals(1, r.code());
    assertEquals(
        "INTERNAL: boom\ndetail: type=type.googleapis.com/google.protobuf.Duration\ngrpc-status: INTERNAL\n",
        r.err());
  }

  @Test
  void deadlineExceeded() throws Exception {
    FakeService fake = new FakeService();
    fake.delayMs = 2000;
    long start = System.nanoTime();
    // directExecutor: the server sleeps on the caller's transport thread, so run it on a real executor.
    String name = InProcessServerBuilder.generateName();
    servers.add(InProcessServerBuilder.forName(name).addService(fake).build().start());
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int code =
        PrismeChat.run(
            new String[] {"--model", "m", "--prompt", "p", "--timeout-ms", "100"},
            new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8),
            o -> InProcessChannelBuilder.forName(name).build());
    String stderr = err.toString(StandardCharsets.UTF_8);
    assertEquals(1, code, stderr);
    assertTrue(stderr.startsWith("DEADLINE_EXCEEDED: "), stderr);
    assertTrue(stderr.endsWith("grpc-status: DEADLINE_EXCEEDED\n"), stderr);
    assertTrue(System.nanoTime() - start < TimeUnit.SECONDS.toNanos(2), "the deadline was not applied");
  }

  @Test
  void badArgumentsExitWithStatus2() throws Exception {
    String[][] cases = {
      {"--prompt", "p"},
      {"--model", "m"},
      {"--model", "m", "--prompt", "p", "--metadata", "novalue"},
      {"--model", "m", "--prompt", "p", "--metadata", "bad key=v"},
      {"--model", "m", "--prompt", "p", "--timeout-ms", "soon"},
      {"--model", "m", "--prompt", "p", "--bogus"},
      {"--model", "m", "--prompt", "p", "--accumulate"},
      {"--model", "m", "--prompt", "p", "--api-key", "a\nb"},
      {"--model"},
    };
    for (String[] args : cases) {
      ByteArrayOutputStream err = new ByteArrayOutputStream();
      int code =
          PrismeChat.run(
              args,
              new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8),
              new PrintStream(err, true, StandardCharsets.UTF_8),
              o -> {
                throw new AssertionError("no channel for bad arguments");
              });
      assertEquals(2, code, String.join(" ", args));
      assertTrue(err.toString(StandardCharsets.UTF_8).startsWith("prisme-chat: "), String.join(" ", args));
    }
  }

  @Test
  void formatDuration() {
    assertEquals("2s", PrismeChat.formatDuration(Duration.newBuilder().setSeconds(2).build()));
    assertEquals("2.5s", PrismeChat.formatDuration(Duration.newBuilder().setSeconds(2).setNanos(500_000_000).build()));
    assertEquals("0.125s", PrismeChat.formatDuration(Duration.newBuilder().setNanos(125_000_000).build()));
    assertEquals("0.000000001s", PrismeChat.formatDuration(Duration.newBuilder().setNanos(1).build()));
    assertEquals(
        "-1.5s", PrismeChat.formatDuration(Duration.newBuilder().setSeconds(-1).setNanos(-500_000_000).build()));
    assertEquals("0s", PrismeChat.formatDuration(Duration.getDefaultInstance()));
  }
}
