package prisme

import (
	"errors"
	"io"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
)

// textFields are the ChatCompletionDelta fields appended fragment by fragment into the
// ChatCompletionMessage field of the same name. A new text field of the delta only needs its name here.
var textFields = []protoreflect.Name{"content", "refusal", "reasoning_content"}

// streamOnlyKeys are chunk-level extra keys that mean nothing once the chunks are folded: obfuscation is
// random padding of each chunk.
var streamOnlyKeys = []string{"obfuscation"}

// Accumulator folds StreamChatCompletionResponse chunks, in order, into the CreateChatCompletionResponse
// the unary call returns. Ask for stream_options.include_usage to get the usage a unary reply carries.
//
// The rules, shared with the Python and Java clients:
//   - id, created, model, system_fingerprint, service_tier, a message's role, a tool call's id and type
//     and the name of its function or custom tool keep their first non-empty value (Azure's first
//     chunk has an empty id);
//   - content, refusal, reasoning_content, a function's arguments and a custom tool call's input are the
//     concatenation of their fragments, and set once a fragment set them, even to "" (a tool-call-only
//     answer keeps content unset, as the unary reply does);
//   - choices merge by index and tool calls by their own index; both come out in index order, whatever
//     index they start at (Anthropic-backed streams start tool calls at 1);
//   - a tool call has the function and/or custom object its fragments carried; without a type it is
//     "custom" if they carried only custom, else "function"; a "function" call always has its function
//     object and a "custom" call its custom object, as in a unary reply;
//   - finish_reason and usage: the last value wins (usage whole, token details included); logprobs
//     entries are appended;
//   - extra objects (of the chunk, choice, delta, tool call, function, custom tool call and logprobs)
//     merge key by key into the same level of the reply, the later value winning; a chunk's
//     "obfuscation" is dropped; delta keys without a typed field (annotations, audio) stay in the
//     message's extra;
//   - object is "chat.completion"; a missing role is "assistant".
//
// The zero value is ready to use. An Accumulator is not safe for concurrent use.
type Accumulator struct {
	head    llmgatewayv1.CreateChatCompletionResponse
	choices map[int32]*choiceState
	usage   *llmgatewayv1.Usage
	chunks  int
}

type choiceState struct {
	index        int32
	role         string
	texts        map[protoreflect.Name]*strings.Builder
	toolCalls    map[int32]*toolCallState
	finishReason string
	logprobs     *llmgatewayv1.ChoiceLogprobs
	extra        *structpb.Struct
	messageExtra *structpb.Struct
}

type toolCallState struct {
	id, typ  string
	function partState // the function object: name, arguments, extra
	custom   partState // the custom tool call object: name, input, extra
	extra    *structpb.Struct
}

// partState folds the fragments of a tool call's function or custom object: the first non-empty name,
// the concatenated text (arguments or input) and the merged extra.
type partState struct {
	seen  bool // some fragment carried this object
	name  string
	text  strings.Builder
	extra *structpb.Struct
}

// Chunks returns how many chunks were added.
func (a *Accumulator) Chunks() int { return a.chunks }

// Add folds one chunk in.
func (a *Accumulator) Add(chunk *llmgatewayv1.StreamChatCompletionResponse) {
	a.chunks++
	h := &a.head
	h.Id = firstNonEmpty(h.Id, chunk.GetId())
	h.Model = firstNonEmpty(h.Model, chunk.GetModel())
	if h.Created == 0 {
		h.Created = chunk.GetCreated()
	}
	if h.SystemFingerprint == nil && chunk.GetSystemFingerprint() != "" {
		h.SystemFingerprint = proto.String(chunk.GetSystemFingerprint())
	}
	if h.ServiceTier == nil && chunk.GetServiceTier() != "" {
		h.ServiceTier = proto.String(chunk.GetServiceTier())
	}
	h.Extra = mergeStruct(h.Extra, chunk.GetExtra(), streamOnlyKeys...)
	if chunk.GetUsage() != nil {
		a.usage = chunk.GetUsage()
	}
	for _, c := range chunk.GetChoices() {
		if a.choices == nil {
			a.choices = map[int32]*choiceState{}
		}
		s := a.choices[c.GetIndex()]
		if s == nil {
			s = &choiceState{index: c.GetIndex()}
			a.choices[c.GetIndex()] = s
		}
		s.add(c)
	}
}

// Response returns the message folded so far, a new one on every call.
func (a *Accumulator) Response() *llmgatewayv1.CreateChatCompletionResponse {
	resp := proto.Clone(&a.head).(*llmgatewayv1.CreateChatCompletionResponse)
	resp.Object = "chat.completion"
	for _, i := range sortedKeys(a.choices) {
		resp.Choices = append(resp.Choices, a.choices[i].build())
	}
	if a.usage != nil {
		resp.Usage = proto.Clone(a.usage).(*llmgatewayv1.Usage)
	}
	return resp
}

// Stream is what Accumulate reads: the client stream of StreamChatCompletion.
type Stream interface {
	Recv() (*llmgatewayv1.StreamChatCompletionResponse, error)
}

// Accumulate reads stream to its end and returns the folded message. On an error it returns what was
// folded before it, with the error (a gRPC status error, see ErrorInfo and RetryDelay).
func Accumulate(stream Stream) (*llmgatewayv1.CreateChatCompletionResponse, error) {
	var acc Accumulator
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return acc.Response(), nil
		}
		if err != nil {
			return acc.Response(), err
		}
		acc.Add(chunk)
	}
}

func (s *choiceState) add(c *llmgatewayv1.ChatCompletionChunkChoice) {
	d := c.GetDelta()
	s.role = firstNonEmpty(s.role, d.GetRole())
	if d != nil {
		m := d.ProtoReflect()
		for _, name := range textFields {
			fd := m.Descriptor().Fields().ByName(name)
			if !m.Has(fd) {
				continue
			}
			if s.texts == nil {
				s.texts = map[protoreflect.Name]*strings.Builder{}
			}
			if s.texts[name] == nil {
				s.texts[name] = &strings.Builder{}
			}
			s.texts[name].WriteString(m.Get(fd).String())
		}
	}
	for _, f := range d.GetToolCalls() {
		if s.toolCalls == nil {
			s.toolCalls = map[int32]*toolCallState{}
		}
		t := s.toolCalls[f.GetIndex()]
		if t == nil {
			t = &toolCallState{}
			s.toolCalls[f.GetIndex()] = t
		}
		t.add(f)
	}
	s.messageExtra = mergeStruct(s.messageExtra, d.GetExtra())
	if c.GetFinishReason() != "" {
		s.finishReason = c.GetFinishReason()
	}
	if c.GetLogprobs() != nil {
		if s.logprobs == nil {
			s.logprobs = &llmgatewayv1.ChoiceLogprobs{}
		}
		s.logprobs.Content = append(s.logprobs.Content, c.GetLogprobs().GetContent()...)
		s.logprobs.Refusal = append(s.logprobs.Refusal, c.GetLogprobs().GetRefusal()...)
		s.logprobs.Extra = mergeStruct(s.logprobs.Extra, c.GetLogprobs().GetExtra())
	}
	s.extra = mergeStruct(s.extra, c.GetExtra())
}

func (s *choiceState) build() *llmgatewayv1.ChatCompletionChoice {
	msg := &llmgatewayv1.ChatCompletionMessage{Role: firstNonEmpty(s.role, "assistant"), Extra: cloneStruct(s.messageExtra)}
	m := msg.ProtoReflect()
	for name, b := range s.texts {
		m.Set(m.Descriptor().Fields().ByName(name), protoreflect.ValueOfString(b.String()))
	}
	for _, i := range sortedKeys(s.toolCalls) {
		msg.ToolCalls = append(msg.ToolCalls, s.toolCalls[i].build())
	}
	choice := &llmgatewayv1.ChatCompletionChoice{
		Index: s.index, Message: msg, FinishReason: s.finishReason, Extra: cloneStruct(s.extra),
	}
	if s.logprobs != nil {
		choice.Logprobs = proto.Clone(s.logprobs).(*llmgatewayv1.ChoiceLogprobs)
	}
	return choice
}

func (t *toolCallState) add(f *llmgatewayv1.ToolCallDelta) {
	t.id = firstNonEmpty(t.id, f.GetId())
	t.typ = firstNonEmpty(t.typ, f.GetType())
	if fn := f.GetFunction(); fn != nil {
		t.function.add(fn.GetName(), fn.GetArguments(), fn.GetExtra())
	}
	if c := f.GetCustom(); c != nil {
		t.custom.add(c.GetName(), c.GetInput(), c.GetExtra())
	}
	t.extra = mergeStruct(t.extra, f.GetExtra())
}

func (t *toolCallState) build() *llmgatewayv1.ToolCall {
	typ := t.typ
	if typ == "" {
		typ = "function"
		if t.custom.seen && !t.function.seen {
			typ = "custom"
		}
	}
	call := &llmgatewayv1.ToolCall{Id: t.id, Type: typ, Extra: cloneStruct(t.extra)}
	if t.function.seen || typ != "custom" {
		call.Function = &llmgatewayv1.FunctionCall{
			Name: t.function.name, Arguments: t.function.text.String(), Extra: cloneStruct(t.function.extra),
		}
	}
	if t.custom.seen || typ == "custom" {
		call.Custom = &llmgatewayv1.CustomToolCall{
			Name: t.custom.name, Input: t.custom.text.String(), Extra: cloneStruct(t.custom.extra),
		}
	}
	return call
}

func (p *partState) add(name, text string, extra *structpb.Struct) {
	p.seen = true
	p.name = firstNonEmpty(p.name, name)
	p.text.WriteString(text)
	p.extra = mergeStruct(p.extra, extra)
}

func firstNonEmpty(current, next string) string {
	if current != "" {
		return current
	}
	return next
}

// mergeStruct copies src's keys (but drop) into dst, allocating dst on the first key; a later value wins.
func mergeStruct(dst, src *structpb.Struct, drop ...string) *structpb.Struct {
	for k, v := range src.GetFields() {
		if slices.Contains(drop, k) {
			continue
		}
		if dst == nil {
			dst = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		}
		dst.Fields[k] = proto.Clone(v).(*structpb.Value)
	}
	return dst
}

func cloneStruct(s *structpb.Struct) *structpb.Struct {
	if s == nil {
		return nil
	}
	return proto.Clone(s).(*structpb.Struct)
}

func sortedKeys[V any](m map[int32]V) []int32 {
	keys := make([]int32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
