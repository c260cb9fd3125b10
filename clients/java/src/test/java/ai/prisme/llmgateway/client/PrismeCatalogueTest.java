package ai.prisme.llmgateway.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.prisme.llmgateway.v1.CreateEmbeddingRequest;
import ai.prisme.llmgateway.v1.CreateEmbeddingResponse;
import ai.prisme.llmgateway.v1.Embedding;
import ai.prisme.llmgateway.v1.EmbeddingServiceGrpc;
import ai.prisme.llmgateway.v1.EmbeddingUsage;
import ai.prisme.llmgateway.v1.ListModelsRequest;
import ai.prisme.llmgateway.v1.ListModelsResponse;
import ai.prisme.llmgateway.v1.Model;
import ai.prisme.llmgateway.v1.ModelServiceGrpc;
import com.google.protobuf.Any;
import com.google.protobuf.util.JsonFormat;
import com.google.rpc.BadRequest;
import com.google.rpc.Code;
import com.google.rpc.ErrorInfo;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.StatusRuntimeException;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class PrismeCatalogueTest {

  private static final List<String> MODELS =
      List.of(
          "echo",
          "bedrock/anthropic.claude-3-haiku",
          "eu.anthropic.claude-sonnet-4-20250514-v1:0",
          "text-embedding-3-small",
          "o3");
  private static final Context.Key<Metadata> HEADERS_CTX = Context.key("headers");

  /** Five models in pages of page_size; the page token is the next offset. */
  static final class FakeModels extends ModelServiceGrpc.ModelServiceImplBase {
    final List<ListModelsRequest> requests = new CopyOnWriteArrayList<>();

    @Override
    public void listModels(ListModelsRequest req, StreamObserver<ListModelsResponse> obs) {
      requests.add(req);
      int start = req.getPageToken().isEmpty() ? 0 : Integer.parseInt(req.getPageToken());
      int end = Math.min(start + req.getPageSize(), MODELS.size());
      ListModelsResponse.Builder page = ListModelsResponse.newBuilder().setTotalSize(MODELS.size());
      for (String id : MODELS.subList(start, end)) {
        page.addModels(Model.newBuilder().setModelId(id).setType("completion"));
      }
      if (end < MODELS.size()) {
        page.setNextPageToken(Integer.toString(end));
      }
      obs.onNext(page.build());
      obs.onCompleted();
    }
  }

  /** Vectors whose first value is the length of their text. */
  static final class FakeEmbeddings extends EmbeddingServiceGrpc.EmbeddingServiceImplBase {
    volatile CreateEmbeddingRequest lastRequest;
    volatile Metadata lastHeaders;
    StatusRuntimeException error;

    @Override
    public void createEmbedding(CreateEmbeddingRequest req, StreamObserver<CreateEmbeddingResponse> obs) {
      lastRequest = req;
      lastHeaders = HEADERS_CTX.get();
      if (error != null) {
        obs.onError(error);
        return;
      }
      CreateEmbeddingResponse.Builder resp =
          CreateEmbeddingResponse.newBuilder()
              .setObject("list")
              .setModel(req.getModel())
              .setUsage(EmbeddingUsage.newBuilder().setPromptTokens(4).setTotalTokens(4));
      for (int i = 0; i < req.getInputCount(); i++) {
        Embedding.Builder e = Embedding.newBuilder().setIndex(i).setObject("embedding");
        e.addEmbedding(req.getInput(i).length());
        for (int d = 1; d < Math.max(req.getDimensions(), 3); d++) {
          e.addEmbedding(0.5f);
        }
        resp.addData(e);
      }
      obs.onNext(resp.build());
      obs.onCompleted();
    }
  }

  /** Puts the request headers into the Context, where the fakes read them. */
  static final class MetadataInterceptor implements ServerInterceptor {
    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(
        ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
      return Contexts.interceptCall(Context.current().withValue(HEADERS_CTX, headers), call, headers, next);
    }
  }

  @RegisterExtension final InProcessServers servers = new InProcessServers();

  private CliRun run(FakeModels models, FakeEmbeddings embeddings, String... args) throws Exception {
    String name =
        servers.start(models.bindService(), ServerInterceptors.intercept(embeddings, new MetadataInterceptor()));
    return CliRun.of(o -> InProcessChannelBuilder.forName(name).build(), args);
  }

  @Test
  void modelsFollowsEveryPageWithItsFilters() throws Exception {
    FakeModels models = new FakeModels();
    CliRun r =
        run(models, new FakeEmbeddings(), "models", "--page-size", "2", "--type", "completion",
            "--tags", "eu, fast", "--model-ids=a/b,c:0", "--visible-only", "--enabled", "false",
            "--brand", "Anthropic", "--capability", "vision", "--search", "claude");
    assertEquals(0, r.code(), r.err());
    StringBuilder want = new StringBuilder();
    for (String id : MODELS) {
      want.append(id).append("\tcompletion\n");
    }
    assertEquals(want.toString(), r.out());
    assertEquals(3, models.requests.size());
    ListModelsRequest first = models.requests.get(0);
    assertEquals(2, first.getPageSize());
    assertEquals("completion", first.getType());
    assertTrue(first.getVisibleOnly());
    assertTrue(first.hasEnabled());
    assertFalse(first.getEnabled());
    assertEquals(List.of("eu", "fast"), first.getTagsList());
    assertEquals(List.of("a/b", "c:0"), first.getModelIdsList());
    assertEquals("Anthropic", first.getBrand());
    assertEquals("vision", first.getCapability());
    assertEquals("claude", first.getSearch());
    assertEquals("2", models.requests.get(1).getPageToken());
    assertEquals("4", models.requests.get(2).getPageToken());
    assertEquals("completion", models.requests.get(2).getType());
  }

  @Test
  void modelsJsonIsOneLinePerPage() throws Exception {
    CliRun r = run(new FakeModels(), new FakeEmbeddings(), "models", "--page-size", "3", "--json");
    assertEquals(0, r.code(), r.err());
    String[] lines = r.out().split("\n");
    assertEquals(2, lines.length, r.out());
    ListModelsResponse.Builder page = ListModelsResponse.newBuilder();
    JsonFormat.parser().merge(lines[0], page);
    assertEquals(3, page.getModelsCount());
    assertEquals("bedrock/anthropic.claude-3-haiku", page.getModels(1).getModelId());
    assertTrue(lines[0].contains("\"next_page_token\":\"3\""), lines[0]);
  }

  @Test
  void embedPrintsOneLinePerInputAndTheUsage() throws Exception {
    FakeEmbeddings embeddings = new FakeEmbeddings();
    CliRun r =
        run(new FakeModels(), embeddings, "embed", "--model", "text-embedding-3-small", "--input", "Hello",
            "--input=big world", "--dimensions", "256", "--encoding-format", "base64", "--user", "u-1",
            "--api-key", "iak_secret", "--metadata", "x-correlation-id=c-1");
    assertEquals(0, r.code(), r.err());
    assertEquals("embedding 0: 256 dimensions\nembedding 1: 256 dimensions\n", r.out());
    assertEquals("usage: prompt_tokens=4 total_tokens=4\n", r.err());
    CreateEmbeddingRequest req = embeddings.lastRequest;
    assertEquals(List.of("Hello", "big world"), req.getInputList());
    assertEquals(256, req.getDimensions());
    assertEquals("base64", req.getEncodingFormat());
    assertEquals("u-1", req.getUser());
    assertEquals(
        "Bearer iak_secret",
        embeddings.lastHeaders.get(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER)));
    assertEquals(
        "c-1", embeddings.lastHeaders.get(Metadata.Key.of("x-correlation-id", Metadata.ASCII_STRING_MARSHALLER)));
  }

  @Test
  void embedJson() throws Exception {
    FakeEmbeddings embeddings = new FakeEmbeddings();
    CliRun r = run(new FakeModels(), embeddings, "embed", "--model", "m", "--input", "abcd", "--json");
    assertEquals(0, r.code(), r.err());
    assertEquals("", r.err());
    CreateEmbeddingResponse.Builder resp = CreateEmbeddingResponse.newBuilder();
    JsonFormat.parser().merge(r.out().strip(), resp);
    assertEquals(4.0f, resp.getData(0).getEmbedding(0));
    assertFalse(embeddings.lastRequest.hasDimensions());
  }

  @Test
  void embedErrorPrintsDetailsAndStatus() throws Exception {
    FakeEmbeddings embeddings = new FakeEmbeddings();
    embeddings.error =
        StatusProto.toStatusRuntimeException(
            com.google.rpc.Status.newBuilder()
                .setCode(Code.INVALID_ARGUMENT_VALUE)
                .setMessage("upstream HTTP 403: dimensions=4 is not supported")
                .addDetails(
                    Any.pack(
                        ErrorInfo.newBuilder()
                            .setReason("UPSTREAM_INVALID_REQUEST")
                            .setDomain("grpc-bridge.prisme.ai")
                            .putMetadata("upstreamCode", "INVALID_DIMENSIONS")
                            .putMetadata("httpStatus", "403")
                            .build()))
                .addDetails(
                    Any.pack(
                        BadRequest.newBuilder()
                            .addFieldViolations(
                                BadRequest.FieldViolation.newBuilder()
                                    .setField("dimensions")
                                    .setDescription("use one of [256, 1536]"))
                            .build()))
                .build());
    CliRun r = run(new FakeModels(), embeddings, "embed", "--model", "m", "--input", "x");
    assertEquals(1, r.code());
    assertEquals("", r.out());
    assertEquals(
        "INVALID_ARGUMENT: upstream HTTP 403: dimensions=4 is not supported\n"
            + "error_info: reason=UPSTREAM_INVALID_REQUEST domain=grpc-bridge.prisme.ai"
            + " metadata={httpStatus=403, upstreamCode=INVALID_DIMENSIONS}\n"
            + "bad_request: field=dimensions description=use one of [256, 1536]\n"
            + "grpc-status: INVALID_ARGUMENT\n",
        r.err());
  }

  /** A run that must not open a channel. */
  private static CliRun runWithoutChannel(String... args) {
    return CliRun.of(
        o -> {
          throw new AssertionError("no channel for " + String.join(" ", args));
        },
        args);
  }

  @ParameterizedTest
  @ValueSource(
      strings = {
        "embed --input x",
        "embed --model m",
        "embed --model m --input x --dimensions -1",
        "embed --model m --input x stray",
        "models --enabled maybe",
        "models --page-size -2",
        "models --page-size many",
        "models --prompt p",
      })
  void badArgumentsExitWithStatus2(String line) {
    CliRun r = runWithoutChannel(line.split(" "));
    assertEquals(2, r.code(), line);
    assertTrue(r.err().startsWith("prisme-chat: "), r.err());
    assertTrue(r.err().contains("usage: prisme-chat models"), r.err());
  }

  @Test
  void helpListsTheCommandsOptions() {
    CliRun r = runWithoutChannel("models", "--help");
    assertEquals(0, r.code());
    assertTrue(r.out().contains("--visible-only"), r.out());
  }
}
