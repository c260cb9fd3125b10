package ai.prisme.llmgateway.client;

import ai.prisme.llmgateway.client.PrismeChat.Args;
import ai.prisme.llmgateway.client.PrismeChat.Options;
import ai.prisme.llmgateway.client.PrismeChat.UsageException;
import ai.prisme.llmgateway.v1.CreateEmbeddingRequest;
import ai.prisme.llmgateway.v1.CreateEmbeddingResponse;
import ai.prisme.llmgateway.v1.Embedding;
import ai.prisme.llmgateway.v1.EmbeddingServiceGrpc;
import ai.prisme.llmgateway.v1.ListModelsRequest;
import ai.prisme.llmgateway.v1.ListModelsResponse;
import ai.prisme.llmgateway.v1.Model;
import ai.prisme.llmgateway.v1.ModelServiceGrpc;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;

/**
 * The {@code models} and {@code embed} commands of prisme-chat: ModelService.ListModels (every page) and
 * EmbeddingService.CreateEmbedding, with the same options and output as the Go client.
 *
 * <pre>
 * java -jar target/prisme-chat.jar models --type embeddings --page-size 50 --visible-only
 * java -jar target/prisme-chat.jar embed --model text-embedding-3-small --input "Hi" --input "there"
 * </pre>
 *
 * <ul>
 *   <li>models: one line per model on stdout, {@code MODEL_ID<TAB>TYPE}, following next_page_token to the
 *       last page; with --json each ListModelsResponse page as one proto3 JSON line.
 *   <li>embed: one line per input on stdout, {@code embedding INDEX: N dimensions}, and {@code usage:
 *       prompt_tokens=N total_tokens=N} on stderr; with --json the CreateEmbeddingResponse as one line.
 *   <li>errors as for chat: {@code CODE: message}, the details, {@code grpc-status: CODE}, exit status 1;
 *       bad arguments exit with status 2.
 * </ul>
 */
final class PrismeCatalogue {

  static final String USAGE =
      String.join(
          "\n",
          "usage: prisme-chat models [options]",
          "  --page-size N         models per call (0 = the gateway's default, 100; above 100 is capped)",
          "  --type TYPE           only this type: completion, embeddings or image_generation",
          "  --search TEXT         case-insensitive search in model id, name and brand",
          "  --brand BRAND         only this brand (exact)",
          "  --capability CAP      only models with this capability: vision, audio, text, image",
          "  --tags A,B            only models with any of these tags",
          "  --model-ids A,B       only these model ids",
          "  --visible-only        leave out hidden models",
          "  --enabled true|false  only enabled, or only disabled, models",
          "usage: prisme-chat embed --model MODEL --input TEXT [--input TEXT ...] [options]",
          "  --dimensions N        output dimensionality (0 = the model's default)",
          "  --encoding-format F   float or base64 on the upstream's wire (the output is floats)",
          "  --user ID             end-user id sent upstream",
          "common options: --addr, --timeout-ms (each call), --api-key, --metadata K=V, --json, --tls, -v");

  private PrismeCatalogue() {}

  static boolean handles(String command) {
    return command.equals("models") || command.equals("embed");
  }

  static int run(
      String[] args, PrintStream out, PrintStream err, Function<Options, ManagedChannel> channels) {
    boolean models = args[0].equals("models");
    ListModelsRequest.Builder list = ListModelsRequest.newBuilder();
    CreateEmbeddingRequest.Builder embed = CreateEmbeddingRequest.newBuilder();
    PrismeChat.Parser parser =
        () -> {
          Options o = new Options();
          if (models) {
            parseModels(new Args(args, 1), o, list);
          } else {
            parseEmbed(new Args(args, 1), o, embed);
          }
          return o;
        };
    PrismeChat.Body body =
        (channel, o) -> {
          if (models) {
            listModels(channel, o, list, out, err);
          } else {
            embed(channel, o, embed.build(), out, err);
          }
        };
    return PrismeChat.execute(USAGE, parser, body, out, err, channels);
  }

  static void parseModels(Args a, Options o, ListModelsRequest.Builder req) throws UsageException {
    while (a.next()) {
      if (PrismeChat.common(o, a)) {
        continue;
      }
      switch (a.name) {
        case "--page-size" -> req.setPageSize(count(a));
        case "--type" -> req.setType(a.value());
        case "--search" -> req.setSearch(a.value());
        case "--brand" -> req.setBrand(a.value());
        case "--capability" -> req.setCapability(a.value());
        case "--tags" -> req.addAllTags(csv(a.value()));
        case "--model-ids" -> req.addAllModelIds(csv(a.value()));
        case "--visible-only" -> req.setVisibleOnly(a.flag());
        case "--enabled" -> {
          String value = a.value();
          if (!value.equals("true") && !value.equals("false")) {
            throw new UsageException("--enabled wants true or false, got '" + value + "'");
          }
          req.setEnabled(value.equals("true"));
        }
        default -> throw a.unknown();
      }
    }
  }

  static void parseEmbed(Args a, Options o, CreateEmbeddingRequest.Builder req) throws UsageException {
    while (a.next()) {
      if (PrismeChat.common(o, a)) {
        continue;
      }
      switch (a.name) {
        case "--model" -> req.setModel(a.value());
        case "--input" -> req.addInput(a.value());
        case "--dimensions" -> {
          int dimensions = count(a);
          if (dimensions > 0) {
            req.setDimensions(dimensions);
          }
        }
        case "--encoding-format" -> req.setEncodingFormat(a.value());
        case "--user" -> req.setUser(a.value());
        default -> throw a.unknown();
      }
    }
    if (req.getModel().isEmpty() || req.getInputCount() == 0) {
      throw new UsageException("embed needs --model and at least one --input");
    }
  }

  /** A non-negative integer option. */
  private static int count(Args a) throws UsageException {
    String name = a.name;
    String value = a.value();
    int n;
    try {
      n = Integer.parseInt(value);
    } catch (NumberFormatException e) {
      throw new UsageException(name + " wants a number, got '" + value + "'");
    }
    if (n < 0) {
      throw new UsageException(name + " must not be negative");
    }
    return n;
  }

  private static List<String> csv(String value) {
    List<String> parts = new ArrayList<>();
    for (String part : value.split(",")) {
      if (!part.isBlank()) {
        parts.add(part.strip());
      }
    }
    return parts;
  }

  private static void listModels(
      ManagedChannel channel, Options o, ListModelsRequest.Builder req, PrintStream out, PrintStream err) {
    while (true) {
      AtomicReference<Metadata> headers = new AtomicReference<>();
      AtomicReference<Metadata> trailers = new AtomicReference<>();
      ListModelsResponse page;
      try {
        page =
            PrismeChat.prepare(ModelServiceGrpc.newBlockingStub(channel), o, headers, trailers)
                .listModels(req.build());
      } finally {
        printCallMetadata(err, o, headers, trailers);
      }
      if (o.json) {
        PrismeChat.printJson(out, page);
      } else {
        for (Model m : page.getModelsList()) {
          out.println(m.getModelId() + "\t" + m.getType());
        }
      }
      if (page.getNextPageToken().isEmpty()) {
        return;
      }
      req.setPageToken(page.getNextPageToken());
    }
  }

  private static void embed(
      ManagedChannel channel, Options o, CreateEmbeddingRequest req, PrintStream out, PrintStream err) {
    AtomicReference<Metadata> headers = new AtomicReference<>();
    AtomicReference<Metadata> trailers = new AtomicReference<>();
    CreateEmbeddingResponse resp;
    try {
      resp =
          PrismeChat.prepare(EmbeddingServiceGrpc.newBlockingStub(channel), o, headers, trailers)
              .createEmbedding(req);
    } finally {
      printCallMetadata(err, o, headers, trailers);
    }
    if (o.json) {
      PrismeChat.printJson(out, resp);
      return;
    }
    for (Embedding e : resp.getDataList()) {
      out.println("embedding " + e.getIndex() + ": " + e.getEmbeddingCount() + " dimensions");
    }
    err.printf(
        "usage: prompt_tokens=%d total_tokens=%d%n",
        resp.getUsage().getPromptTokens(), resp.getUsage().getTotalTokens());
  }

  private static void printCallMetadata(
      PrintStream err, Options o, AtomicReference<Metadata> headers, AtomicReference<Metadata> trailers) {
    if (o.verbose) {
      PrismeChat.printMetadata(err, "header", headers.get());
      PrismeChat.printMetadata(err, "trailer", trailers.get());
    }
  }
}
