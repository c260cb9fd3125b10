package ai.prisme.llmgateway.client;

import ai.prisme.llmgateway.v1.ChatCompletionChoice;
import ai.prisme.llmgateway.v1.ChatCompletionChunkChoice;
import ai.prisme.llmgateway.v1.ChatCompletionServiceGrpc;
import ai.prisme.llmgateway.v1.ChatMessage;
import ai.prisme.llmgateway.v1.CreateChatCompletionRequest;
import ai.prisme.llmgateway.v1.CreateChatCompletionResponse;
import ai.prisme.llmgateway.v1.StreamChatCompletionResponse;
import ai.prisme.llmgateway.v1.StreamOptions;
import ai.prisme.llmgateway.v1.Usage;
import com.google.protobuf.Any;
import com.google.protobuf.Duration;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.MessageOrBuilder;
import com.google.protobuf.util.JsonFormat;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.Help;
import com.google.rpc.LocalizedMessage;
import com.google.rpc.PreconditionFailure;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RequestInfo;
import com.google.rpc.RetryInfo;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.MetadataUtils;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;

/**
 * Calls prisme.llmgateway.v1.ChatCompletionService (the prisme-grpc-bridge) with one user prompt and prints
 * the answer: a working example of the generated Java stubs, and the same command-line contract as the Go
 * client (clients/go/cmd/prisme-chat).
 *
 * <pre>
 * java -jar target/prisme-chat.jar --addr 127.0.0.1:50051 --model gpt-4o --prompt "Say hello"
 * java -jar target/prisme-chat.jar --model gpt-4o --prompt "Count to 5" --stream --include-usage
 * java -jar target/prisme-chat.jar --model gpt-4o --prompt "Count to 5" --stream --accumulate --json
 * java -jar target/prisme-chat.jar models --type embeddings --page-size 50     (see PrismeCatalogue)
 * java -jar target/prisme-chat.jar embed --model text-embedding-3-small --input "Hi" --json
 * </pre>
 *
 * <p>Output contract:
 *
 * <ul>
 *   <li>text mode: the assistant text of choice 0 on stdout, then a newline (with --stream, the content
 *       deltas are written as they arrive); with --include-usage a {@code usage: ...} line on stderr.
 *   <li>--json: each response (unary) or chunk (stream) on stdout as compact proto3 JSON, one per line,
 *       field names as in the .proto (snake_case, the upstream JSON keys).
 *   <li>--stream --accumulate: the chunks are folded ({@link StreamAccumulator}) and printed as the unary
 *       reply would be: the text once, or with --json one CreateChatCompletionResponse line.
 *   <li>-v: {@code header KEY: VALUE} and {@code trailer KEY: VALUE} lines on stderr.
 *   <li>on an RPC error: {@code CODE: message}, one line per google.rpc detail, then {@code grpc-status:
 *       CODE} on stderr, exit status 1. Bad arguments exit with status 2.
 * </ul>
 */
public final class PrismeChat {

  static final String USAGE =
      String.join(
          "\n",
          "usage: prisme-chat --model MODEL --prompt TEXT [options]",
          "       prisme-chat models [options]    (ModelService; prisme-chat models --help)",
          "       prisme-chat embed --model MODEL --input TEXT [--input TEXT ...] [options]",
          "  --addr HOST:PORT      bridge address, any gRPC target (default 127.0.0.1:50051)",
          "  --model MODEL         model id as the gateway names it (required)",
          "  --prompt TEXT         user message to send (required)",
          "  --stream              call StreamChatCompletion and print deltas as they arrive",
          "  --accumulate          with --stream, fold the chunks and print the result as a unary reply",
          "  --timeout-ms N        deadline of the call in milliseconds, 0 = none (default 30000)",
          "  --api-key KEY         sent as 'authorization: Bearer KEY' metadata",
          "  --include-usage       with --stream, ask for the usage chunk; print token usage to stderr",
          "  --json                print each response/chunk as proto3 JSON, one per line",
          "  --metadata K=V        extra request metadata (repeatable)",
          "  --tls                 use TLS with the JDK's trusted roots (default: plaintext)",
          "  -v, --verbose         print response header and trailer metadata to stderr",
          "  -h, --help            show this help");

  private static final JsonFormat.Printer JSON =
      JsonFormat.printer().preservingProtoFieldNames().omittingInsignificantWhitespace();

  /** Parsed command line. */
  static final class Options {
    String addr = "127.0.0.1:50051";
    String model = "";
    String prompt = "";
    boolean stream;
    boolean accumulate;
    long timeoutMs = 30_000;
    String apiKey = "";
    boolean includeUsage;
    boolean json;
    boolean verbose;
    boolean tls;
    final List<String[]> metadata = new ArrayList<>();
  }

  /** Bad command line; the message goes to stderr and the exit status is 2. */
  static final class UsageException extends Exception {
    UsageException(String message) {
      super(message);
    }
  }

  private PrismeChat() {}

  public static void main(String[] args) {
    PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
    PrintStream err = new PrintStream(new FileOutputStream(FileDescriptor.err), true, StandardCharsets.UTF_8);
    int code = run(args, out, err, PrismeChat::defaultChannel);
    out.flush();
    err.flush();
    System.exit(code);
  }

  static ManagedChannel defaultChannel(Options o) {
    return PrismeChannels.builder(o.addr, o.tls ? PrismeChannels.tls() : PrismeChannels.plaintext()).build();
  }

  /** main without the process: returns the exit status. Tests pass an in-process channel factory. */
  static int run(
      String[] args, PrintStream out, PrintStream err, Function<Options, ManagedChannel> channels) {
    if (args.length > 0 && PrismeCatalogue.handles(args[0])) {
      return PrismeCatalogue.run(args, out, err, channels);
    }
    return execute(USAGE, () -> parse(args), (channel, o) -> chat(channel, o, out, err), out, err, channels);
  }

  /** Parses a command's arguments into its options. */
  @FunctionalInterface
  interface Parser {
    Options parse() throws UsageException;
  }

  /** What a command does once its channel is open; an RPC failure is thrown. */
  @FunctionalInterface
  interface Body {
    void call(ManagedChannel channel, Options o);
  }

  /**
   * Runs a command: arguments (help: status 0, bad: 2 with the usage), the channel (bad address: 2), the
   * calls (an RPC error is printed, status 1), then closes the channel.
   */
  static int execute(
      String usage,
      Parser parser,
      Body body,
      PrintStream out,
      PrintStream err,
      Function<Options, ManagedChannel> channels) {
    Options o;
    try {
      o = parser.parse();
    } catch (UsageException e) {
      if (e.getMessage().isEmpty()) { // --help
        out.println(usage);
        return 0;
      }
      err.println("prisme-chat: " + e.getMessage());
      err.println(usage);
      return 2;
    }
    ManagedChannel channel;
    try {
      channel = channels.apply(o);
    } catch (IllegalArgumentException e) { // e.g. an unparsable --addr
      err.println("prisme-chat: " + e.getMessage());
      return 2;
    }
    try {
      body.call(channel, o);
      return 0;
    } catch (RuntimeException e) {
      printError(err, e);
      return 1;
    } finally {
      channel.shutdownNow();
      try {
        channel.awaitTermination(5, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
  }

  private static void chat(ManagedChannel channel, Options o, PrintStream out, PrintStream err) {
    AtomicReference<Metadata> headers = new AtomicReference<>();
    AtomicReference<Metadata> trailers = new AtomicReference<>();
    ChatCompletionServiceGrpc.ChatCompletionServiceBlockingStub stub =
        prepare(ChatCompletionServiceGrpc.newBlockingStub(channel), o, headers, trailers);
    CreateChatCompletionRequest req = buildRequest(o);
    try {
      if (o.stream) {
        callStream(stub, req, o, out, err, headers);
      } else {
        callUnary(stub, req, o, out, err);
      }
    } finally {
      if (o.verbose) {
        if (!o.stream || headers.get() != null) {
          printMetadata(err, "header", headers.get());
        }
        printMetadata(err, "trailer", trailers.get());
      }
    }
  }

  /**
   * A stub for one call (its deadline starts now): the options' metadata, deadline and credentials, the
   * response headers and trailers captured into {@code headers} and {@code trailers}.
   */
  static <S extends AbstractStub<S>> S prepare(
      S stub, Options o, AtomicReference<Metadata> headers, AtomicReference<Metadata> trailers) {
    S prepared =
        stub.withInterceptors(
            MetadataUtils.newAttachHeadersInterceptor(outgoingMetadata(o)),
            MetadataUtils.newCaptureMetadataInterceptor(headers, trailers));
    if (o.timeoutMs > 0) {
      prepared = prepared.withDeadlineAfter(o.timeoutMs, TimeUnit.MILLISECONDS);
    }
    if (!o.apiKey.isEmpty()) {
      // Plaintext is this command's documented default (loopback, a mesh): the key goes either way.
      prepared = prepared.withCallCredentials(BearerCredentials.of(o.apiKey).allowingPlaintext());
    }
    return prepared;
  }

  static Options parse(String[] args) throws UsageException {
    Options o = new Options();
    Args a = new Args(args, 0);
    while (a.next()) {
      if (common(o, a)) {
        continue;
      }
      switch (a.name) {
        case "--stream" -> o.stream = a.flag();
        case "--accumulate" -> o.accumulate = a.flag();
        case "--include-usage" -> o.includeUsage = a.flag();
        case "--model" -> o.model = a.value();
        case "--prompt" -> o.prompt = a.value();
        default -> throw a.unknown();
      }
    }
    if (o.model.isEmpty() || o.prompt.isEmpty()) {
      throw new UsageException("--model and --prompt are required");
    }
    if (o.accumulate && !o.stream) {
      throw new UsageException("--accumulate needs --stream");
    }
    return o;
  }

  /** A cursor over the command line: {@code --name value}, {@code --name=value} and flags. */
  static final class Args {
    private final String[] args;
    private int i;
    private String arg;
    String name;
    private String inline;

    Args(String[] args, int from) {
      this.args = args;
      this.i = from;
    }

    /** Moves to the next argument; false at the end. */
    boolean next() {
      if (i >= args.length) {
        return false;
      }
      arg = args[i++];
      name = arg;
      inline = null;
      int eq = arg.indexOf('=');
      if (arg.startsWith("--") && eq > 0) {
        name = arg.substring(0, eq);
        inline = arg.substring(eq + 1);
      }
      return true;
    }

    /** The option's value: after "=", else the next argument. */
    String value() throws UsageException {
      if (inline != null) {
        return inline;
      }
      if (i >= args.length) {
        throw new UsageException(name + " needs a value");
      }
      return args[i++];
    }

    /** The flag's value: true, or "=true" / "=false". */
    boolean flag() throws UsageException {
      return PrismeChat.flag(name, inline);
    }

    UsageException unknown() {
      return new UsageException("unknown argument '" + arg + "'");
    }
  }

  /** Applies an option every command takes (address, credentials, metadata, output); false if not one. */
  static boolean common(Options o, Args a) throws UsageException {
    switch (a.name) {
      case "-h", "--help" -> throw new UsageException("");
      case "--json" -> o.json = a.flag();
      case "--tls" -> o.tls = a.flag();
      case "-v", "--verbose" -> o.verbose = a.flag();
      case "--addr" -> o.addr = a.value();
      case "--api-key" -> {
        String value = a.value();
        if (value.isEmpty() || value.contains("\n") || value.contains("\r")) {
          throw new UsageException("--api-key must be non-empty and on one line");
        }
        o.apiKey = value;
      }
      case "--timeout-ms" -> {
        String value = a.value();
        try {
          o.timeoutMs = Long.parseLong(value);
        } catch (NumberFormatException e) {
          throw new UsageException("--timeout-ms wants milliseconds, got '" + value + "'");
        }
        if (o.timeoutMs < 0) {
          throw new UsageException("--timeout-ms must not be negative");
        }
      }
      case "--metadata" -> {
        String value = a.value();
        int at = value.indexOf('=');
        if (at <= 0) {
          throw new UsageException("--metadata wants key=value, got '" + value + "'");
        }
        String key = value.substring(0, at).toLowerCase(java.util.Locale.ROOT);
        if (!key.matches("[0-9a-z_.-]+")) {
          throw new UsageException("--metadata key '" + key + "' is not a valid gRPC metadata key");
        }
        o.metadata.add(new String[] {key, value.substring(at + 1)});
      }
      default -> {
        return false;
      }
    }
    return true;
  }

  static boolean flag(String name, String inline) throws UsageException {
    if (inline == null || inline.equals("true")) {
      return true;
    }
    if (inline.equals("false")) {
      return false;
    }
    throw new UsageException(name + " is a flag, got '" + inline + "'");
  }

  static Metadata outgoingMetadata(Options o) {
    Metadata md = new Metadata();
    for (String[] kv : o.metadata) {
      if (kv[0].endsWith(Metadata.BINARY_HEADER_SUFFIX)) {
        md.put(
            Metadata.Key.of(kv[0], Metadata.BINARY_BYTE_MARSHALLER),
            kv[1].getBytes(StandardCharsets.UTF_8));
      } else {
        md.put(Metadata.Key.of(kv[0], Metadata.ASCII_STRING_MARSHALLER), kv[1]);
      }
    }
    return md;
  }

  static CreateChatCompletionRequest buildRequest(Options o) {
    CreateChatCompletionRequest.Builder req =
        CreateChatCompletionRequest.newBuilder()
            .setModel(o.model)
            .addMessages(
                ChatMessage.newBuilder()
                    .setRole("user")
                    .setContentText(o.prompt)); // plain text: no protobuf Value needed
    if (o.stream && o.includeUsage) {
      req.setStreamOptions(StreamOptions.newBuilder().setIncludeUsage(true));
    }
    return req.build();
  }

  private static void callUnary(
      ChatCompletionServiceGrpc.ChatCompletionServiceBlockingStub stub,
      CreateChatCompletionRequest req,
      Options o,
      PrintStream out,
      PrintStream err) {
    printResponse(stub.createChatCompletion(req), o, out, err);
  }

  /** Prints a unary reply (or a folded stream): JSON, or the text of choice 0 and the usage. */
  private static void printResponse(CreateChatCompletionResponse resp, Options o, PrintStream out, PrintStream err) {
    if (o.json) {
      printJson(out, resp);
      return;
    }
    String text = "";
    for (ChatCompletionChoice c : resp.getChoicesList()) {
      if (c.getIndex() == 0) {
        text = c.getMessage().getContent().isEmpty() ? c.getMessage().getRefusal() : c.getMessage().getContent();
        break;
      }
    }
    out.println(text);
    if (o.includeUsage && resp.hasUsage()) {
      printUsage(err, resp.getUsage());
    }
  }

  private static void callStream(
      ChatCompletionServiceGrpc.ChatCompletionServiceBlockingStub stub,
      CreateChatCompletionRequest req,
      Options o,
      PrintStream out,
      PrintStream err,
      AtomicReference<Metadata> headers) {
    Usage usage = null;
    StringBuilder refusal = new StringBuilder();
    boolean wroteText = false;
    boolean printedHeaders = false;
    Iterator<StreamChatCompletionResponse> chunks = stub.streamChatCompletion(req);
    if (o.accumulate) {
      StreamAccumulator acc = new StreamAccumulator();
      while (chunks.hasNext()) {
        acc.add(chunks.next());
        if (o.verbose && acc.chunks() == 1) {
          printMetadata(err, "header", headers.getAndSet(null));
        }
      }
      printResponse(acc.response(), o, out, err);
      return;
    }
    try {
      while (chunks.hasNext()) {
        StreamChatCompletionResponse chunk = chunks.next();
        if (o.verbose && !printedHeaders) {
          printMetadata(err, "header", headers.getAndSet(null)); // printed once, before the output
          printedHeaders = true;
        }
        if (chunk.hasUsage()) {
          usage = chunk.getUsage();
        }
        if (o.json) {
          printJson(out, chunk);
          continue;
        }
        for (ChatCompletionChunkChoice c : chunk.getChoicesList()) {
          if (c.getIndex() != 0) {
            continue;
          }
          String s = c.getDelta().getContent();
          if (!s.isEmpty()) {
            out.print(s);
            out.flush();
            wroteText = true;
          }
          refusal.append(c.getDelta().getRefusal());
        }
      }
    } catch (RuntimeException e) {
      if (wroteText) {
        out.println(); // terminate the partial line
      }
      throw e;
    }
    if (!o.json) {
      if (!wroteText && refusal.length() > 0) {
        out.print(refusal);
      }
      out.println();
      if (o.includeUsage && usage != null) {
        printUsage(err, usage);
      }
    }
  }

  /** Prints a message as proto3 JSON on one line, with the .proto field names. */
  static void printJson(PrintStream out, MessageOrBuilder m) {
    try {
      out.println(JSON.print(m));
    } catch (InvalidProtocolBufferException e) {
      throw new IllegalStateException("cannot print as JSON: " + e.getMessage(), e);
    }
  }

  private static void printUsage(PrintStream err, Usage u) {
    err.printf(
        "usage: prompt_tokens=%d completion_tokens=%d total_tokens=%d%n",
        u.getPromptTokens(), u.getCompletionTokens(), u.getTotalTokens());
  }

  static void printMetadata(PrintStream err, String kind, Metadata md) {
    if (md == null) {
      return;
    }
    for (String key : new TreeSet<>(md.keys())) {
      if (key.endsWith(Metadata.BINARY_HEADER_SUFFIX)) {
        for (byte[] v : md.getAll(Metadata.Key.of(key, Metadata.BINARY_BYTE_MARSHALLER))) {
          err.println(kind + " " + key + ": " + Base64.getEncoder().encodeToString(v));
        }
      } else {
        for (String v : md.getAll(Metadata.Key.of(key, Metadata.ASCII_STRING_MARSHALLER))) {
          err.println(kind + " " + key + ": " + v);
        }
      }
    }
  }

  /** Writes {@code CODE: message}, one line per google.rpc detail, and {@code grpc-status: CODE}. */
  static void printError(PrintStream err, Throwable t) {
    Status status = Status.fromThrowable(t);
    String name = status.getCode().name();
    String message = status.getDescription() != null ? status.getDescription() : "";
    if (status.getCode() == Status.Code.UNKNOWN && status.getDescription() == null) {
      message = String.valueOf(t); // not a gRPC failure
    } else if (status.getCause() != null && status.getCause().getMessage() != null) {
      message += " (" + status.getCause().getMessage() + ")"; // client-side failure, e.g. connection refused
    }
    err.println(name + ": " + message);
    com.google.rpc.Status details = StatusProto.fromThrowable(t);
    if (details != null) {
      for (Any any : details.getDetailsList()) {
        try {
          printDetail(err, any);
        } catch (InvalidProtocolBufferException e) {
          err.println("detail: type=" + any.getTypeUrl());
        }
      }
    }
    err.println("grpc-status: " + name);
  }

  private static void printDetail(PrintStream err, Any any) throws InvalidProtocolBufferException {
    if (any.is(ErrorInfo.class)) {
      ErrorInfo d = any.unpack(ErrorInfo.class);
      err.println(
          "error_info: reason=" + d.getReason() + " domain=" + d.getDomain()
              + " metadata={" + sortedPairs(d.getMetadataMap()) + "}");
    } else if (any.is(RetryInfo.class)) {
      err.println("retry_info: retry_delay=" + formatDuration(any.unpack(RetryInfo.class).getRetryDelay()));
    } else if (any.is(BadRequest.class)) {
      for (BadRequest.FieldViolation v : any.unpack(BadRequest.class).getFieldViolationsList()) {
        err.println("bad_request: field=" + v.getField() + " description=" + v.getDescription());
      }
    } else if (any.is(QuotaFailure.class)) {
      for (QuotaFailure.Violation v : any.unpack(QuotaFailure.class).getViolationsList()) {
        err.println("quota_failure: subject=" + v.getSubject() + " description=" + v.getDescription());
      }
    } else if (any.is(PreconditionFailure.class)) {
      for (PreconditionFailure.Violation v : any.unpack(PreconditionFailure.class).getViolationsList()) {
        err.println(
            "precondition_failure: type=" + v.getType() + " subject=" + v.getSubject()
                + " description=" + v.getDescription());
      }
    } else if (any.is(RequestInfo.class)) {
      err.println("request_info: request_id=" + any.unpack(RequestInfo.class).getRequestId());
    } else if (any.is(LocalizedMessage.class)) {
      LocalizedMessage d = any.unpack(LocalizedMessage.class);
      err.println("localized_message: locale=" + d.getLocale() + " message=" + d.getMessage());
    } else if (any.is(Help.class)) {
      for (Help.Link l : any.unpack(Help.class).getLinksList()) {
        err.println("help: description=" + l.getDescription() + " url=" + l.getUrl());
      }
    } else {
      err.println("detail: type=" + any.getTypeUrl());
    }
  }

  static String sortedPairs(Map<String, String> m) {
    List<String> parts = new ArrayList<>();
    for (Map.Entry<String, String> e : new TreeMap<>(m).entrySet()) {
      parts.add(e.getKey() + "=" + e.getValue());
    }
    return String.join(", ", parts);
  }

  /** Seconds with no trailing zeros: "2s", "2.5s", "0.125s" (as the Go client prints them). */
  static String formatDuration(Duration d) {
    long s = d.getSeconds();
    int n = d.getNanos();
    if (n == 0) {
      return s + "s";
    }
    String sign = "";
    if (s < 0 || n < 0) {
      sign = "-";
      s = -s;
      n = -n;
    }
    String frac = String.format("%09d", n).replaceAll("0+$", "");
    return sign + s + "." + frac + "s";
  }
}
