package ai.prisme.llmgateway.client;

import ai.prisme.llmgateway.v1.ChatCompletionChoice;
import ai.prisme.llmgateway.v1.ChatCompletionChunkChoice;
import ai.prisme.llmgateway.v1.ChatCompletionDelta;
import ai.prisme.llmgateway.v1.ChatCompletionMessage;
import ai.prisme.llmgateway.v1.ChoiceLogprobs;
import ai.prisme.llmgateway.v1.CreateChatCompletionResponse;
import ai.prisme.llmgateway.v1.CustomToolCall;
import ai.prisme.llmgateway.v1.CustomToolCallDelta;
import ai.prisme.llmgateway.v1.FunctionCall;
import ai.prisme.llmgateway.v1.FunctionCallDelta;
import ai.prisme.llmgateway.v1.StreamChatCompletionResponse;
import ai.prisme.llmgateway.v1.ToolCall;
import ai.prisme.llmgateway.v1.ToolCallDelta;
import ai.prisme.llmgateway.v1.Usage;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Struct;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * Folds StreamChatCompletionResponse chunks, in order, into the CreateChatCompletionResponse the unary call
 * returns. Ask for {@code stream_options.include_usage} to get the usage a unary reply carries.
 *
 * <p>The rules, shared with the Go and Python clients (clients/testdata/accumulator):
 *
 * <ul>
 *   <li>id, created, model, system_fingerprint, service_tier, a message's role, a tool call's id and type
 *       and the name of its function or custom tool keep their first non-empty value (Azure's first chunk
 *       has an empty id);
 *   <li>content, refusal, reasoning_content, a function's arguments and a custom tool call's input are the
 *       concatenation of their fragments, and set once a fragment set them, even to "" (a tool-call-only
 *       answer keeps content unset, as the unary reply does);
 *   <li>choices merge by index and tool calls by their own index; both come out in index order, whatever
 *       index they start at;
 *   <li>a tool call has the function and/or custom object its fragments carried; without a type it is
 *       "custom" if they carried only custom, else "function"; a "function" call always has its function
 *       object and a "custom" call its custom object, as in a unary reply;
 *   <li>finish_reason and usage: the last value wins (usage whole, token details included); logprobs
 *       entries are appended;
 *   <li>extra objects (of the chunk, choice, delta, tool call, function, custom tool call and logprobs)
 *       merge key by key into the same level of the reply, the later value winning; a chunk's
 *       "obfuscation" is dropped; delta keys without a typed field (annotations, audio) stay in the
 *       message's extra;
 *   <li>object is "chat.completion"; a missing role is "assistant".
 * </ul>
 *
 * <p>Not thread-safe.
 */
public final class StreamAccumulator {

  /**
   * Delta fields appended fragment by fragment into the message field of the same name; a new text field of
   * ChatCompletionDelta only needs its name here.
   */
  static final List<String> TEXT_FIELDS = List.of("content", "refusal", "reasoning_content");

  /** Chunk-level extra keys that mean nothing once folded: obfuscation is random padding per chunk. */
  static final Set<String> STREAM_ONLY_KEYS = Set.of("obfuscation");

  private final CreateChatCompletionResponse.Builder head = CreateChatCompletionResponse.newBuilder();
  private final Map<Integer, ChoiceState> choices = new TreeMap<>();
  private Usage usage;
  private int chunks;

  /** Folds a whole stream, e.g. the iterator of a blocking stub's streamChatCompletion. */
  public static CreateChatCompletionResponse accumulate(Iterator<StreamChatCompletionResponse> stream) {
    StreamAccumulator acc = new StreamAccumulator();
    stream.forEachRemaining(acc::add);
    return acc.response();
  }

  /** How many chunks were added. */
  public int chunks() {
    return chunks;
  }

  /** Folds one chunk in. */
  public void add(StreamChatCompletionResponse chunk) {
    chunks++;
    if (head.getId().isEmpty()) {
      head.setId(chunk.getId());
    }
    if (head.getModel().isEmpty()) {
      head.setModel(chunk.getModel());
    }
    if (head.getCreated() == 0) {
      head.setCreated(chunk.getCreated());
    }
    if (!head.hasSystemFingerprint() && !chunk.getSystemFingerprint().isEmpty()) {
      head.setSystemFingerprint(chunk.getSystemFingerprint());
    }
    if (!head.hasServiceTier() && !chunk.getServiceTier().isEmpty()) {
      head.setServiceTier(chunk.getServiceTier());
    }
    mergeExtra(head.getExtraBuilder(), chunk.getExtra(), STREAM_ONLY_KEYS);
    if (chunk.hasUsage()) {
      usage = chunk.getUsage();
    }
    for (ChatCompletionChunkChoice c : chunk.getChoicesList()) {
      choices.computeIfAbsent(c.getIndex(), ChoiceState::new).add(c);
    }
  }

  /** The message folded so far (a new one on every call). */
  public CreateChatCompletionResponse response() {
    CreateChatCompletionResponse.Builder r = head.clone().setObject("chat.completion");
    if (r.getExtra().getFieldsCount() == 0) {
      r.clearExtra();
    }
    choices.values().forEach(s -> r.addChoices(s.build()));
    if (usage != null) {
      r.setUsage(usage);
    }
    return r.build();
  }

  private static void mergeExtra(Struct.Builder target, Struct source, Set<String> drop) {
    source.getFieldsMap().forEach((k, v) -> {
      if (!drop.contains(k)) {
        target.putFields(k, v);
      }
    });
  }

  private static String firstNonEmpty(String current, String next) {
    return current.isEmpty() ? next : current;
  }

  private static final class ChoiceState {
    private final int index;
    private String role = "";
    private final Map<String, StringBuilder> texts = new LinkedHashMap<>();
    private final Map<Integer, ToolCallState> toolCalls = new TreeMap<>();
    private String finishReason = "";
    private ChoiceLogprobs.Builder logprobs;
    private final Struct.Builder extra = Struct.newBuilder();
    private final Struct.Builder messageExtra = Struct.newBuilder();

    ChoiceState(int index) {
      this.index = index;
    }

    void add(ChatCompletionChunkChoice c) {
      ChatCompletionDelta d = c.getDelta();
      role = firstNonEmpty(role, d.getRole());
      for (String name : TEXT_FIELDS) {
        FieldDescriptor fd = ChatCompletionDelta.getDescriptor().findFieldByName(name);
        if (d.hasField(fd)) {
          texts.computeIfAbsent(name, n -> new StringBuilder()).append((String) d.getField(fd));
        }
      }
      for (ToolCallDelta f : d.getToolCallsList()) {
        toolCalls.computeIfAbsent(f.getIndex(), i -> new ToolCallState()).add(f);
      }
      mergeExtra(messageExtra, d.getExtra(), Set.of());
      if (!c.getFinishReason().isEmpty()) {
        finishReason = c.getFinishReason();
      }
      if (c.hasLogprobs()) {
        if (logprobs == null) {
          logprobs = ChoiceLogprobs.newBuilder();
        }
        logprobs.addAllContent(c.getLogprobs().getContentList());
        logprobs.addAllRefusal(c.getLogprobs().getRefusalList());
        if (c.getLogprobs().getExtra().getFieldsCount() > 0) {
          mergeExtra(logprobs.getExtraBuilder(), c.getLogprobs().getExtra(), Set.of());
        }
      }
      mergeExtra(extra, c.getExtra(), Set.of());
    }

    ChatCompletionChoice build() {
      ChatCompletionMessage.Builder m = ChatCompletionMessage.newBuilder().setRole(firstNonEmpty(role, "assistant"));
      texts.forEach(
          (name, text) -> m.setField(ChatCompletionMessage.getDescriptor().findFieldByName(name), text.toString()));
      toolCalls.values().forEach(t -> m.addToolCalls(t.build()));
      if (messageExtra.getFieldsCount() > 0) {
        m.setExtra(messageExtra.build());
      }
      ChatCompletionChoice.Builder c =
          ChatCompletionChoice.newBuilder().setIndex(index).setMessage(m).setFinishReason(finishReason);
      if (logprobs != null) {
        c.setLogprobs(logprobs.build());
      }
      if (extra.getFieldsCount() > 0) {
        c.setExtra(extra.build());
      }
      return c.build();
    }
  }

  private static final class ToolCallState {
    private String id = "";
    private String type = "";
    private final PartState function = new PartState();
    private final PartState custom = new PartState();
    private final Struct.Builder extra = Struct.newBuilder();

    void add(ToolCallDelta f) {
      id = firstNonEmpty(id, f.getId());
      type = firstNonEmpty(type, f.getType());
      if (f.hasFunction()) {
        FunctionCallDelta fn = f.getFunction();
        function.add(fn.getName(), fn.getArguments(), fn.getExtra());
      }
      if (f.hasCustom()) {
        CustomToolCallDelta c = f.getCustom();
        custom.add(c.getName(), c.getInput(), c.getExtra());
      }
      mergeExtra(extra, f.getExtra(), Set.of());
    }

    ToolCall build() {
      String kind = type.isEmpty() ? (custom.seen && !function.seen ? "custom" : "function") : type;
      ToolCall.Builder t = ToolCall.newBuilder().setId(id).setType(kind);
      if (function.seen || !kind.equals("custom")) {
        FunctionCall.Builder fn = t.getFunctionBuilder().setName(function.name).setArguments(function.text());
        if (function.extra.getFieldsCount() > 0) {
          fn.setExtra(function.extra.build());
        }
      }
      if (custom.seen || kind.equals("custom")) {
        CustomToolCall.Builder c = t.getCustomBuilder().setName(custom.name).setInput(custom.text());
        if (custom.extra.getFieldsCount() > 0) {
          c.setExtra(custom.extra.build());
        }
      }
      if (extra.getFieldsCount() > 0) {
        t.setExtra(extra.build());
      }
      return t.build();
    }
  }

  /**
   * The fragments of a tool call's function or custom object: the first non-empty name, the concatenated
   * text (arguments or input) and the merged extra.
   */
  private static final class PartState {
    private boolean seen; // some fragment carried this object
    private String name = "";
    private final StringBuilder text = new StringBuilder();
    private final Struct.Builder extra = Struct.newBuilder();

    void add(String fragmentName, String fragmentText, Struct fragmentExtra) {
      seen = true;
      name = firstNonEmpty(name, fragmentName);
      text.append(fragmentText);
      mergeExtra(extra, fragmentExtra, Set.of());
    }

    String text() {
      return text.toString();
    }
  }
}
