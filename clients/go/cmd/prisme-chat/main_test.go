package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
)

// fakeService answers with canned data and records what it received.
type fakeService struct {
	llmgatewayv1.UnimplementedChatCompletionServiceServer

	mu      sync.Mutex
	lastReq *llmgatewayv1.CreateChatCompletionRequest
	lastMD  metadata.MD

	unaryErr  error         // returned by CreateChatCompletion when set
	streamErr error         // returned by StreamChatCompletion after the chunks when set
	delay     time.Duration // before answering
}

func (f *fakeService) record(ctx context.Context, req *llmgatewayv1.CreateChatCompletionRequest) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastReq = req
	f.lastMD = md
}

func (f *fakeService) CreateChatCompletion(ctx context.Context, req *llmgatewayv1.CreateChatCompletionRequest) (*llmgatewayv1.CreateChatCompletionResponse, error) {
	f.record(ctx, req)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-request-id", "req-42"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-upstream-ms", "12"))
	if f.unaryErr != nil {
		return nil, f.unaryErr
	}
	return &llmgatewayv1.CreateChatCompletionResponse{
		Id: "chatcmpl-1", Object: "chat.completion", Created: 1700000000, Model: req.GetModel(),
		Choices: []*llmgatewayv1.ChatCompletionChoice{{
			Index:        0,
			Message:      &llmgatewayv1.ChatCompletionMessage{Role: "assistant", Content: proto.String("Hello there!")},
			FinishReason: "stop",
		}},
		Usage: &llmgatewayv1.Usage{PromptTokens: 5, CompletionTokens: 3, TotalTokens: 8},
	}, nil
}

func (f *fakeService) StreamChatCompletion(req *llmgatewayv1.CreateChatCompletionRequest, stream grpc.ServerStreamingServer[llmgatewayv1.StreamChatCompletionResponse]) error {
	f.record(stream.Context(), req)
	_ = stream.SetHeader(metadata.Pairs("x-request-id", "req-43"))
	chunk := func(delta *llmgatewayv1.ChatCompletionDelta, finish *string) *llmgatewayv1.StreamChatCompletionResponse {
		return &llmgatewayv1.StreamChatCompletionResponse{
			Id: "chatcmpl-2", Object: "chat.completion.chunk", Created: 1700000001, Model: req.GetModel(),
			Choices: []*llmgatewayv1.ChatCompletionChunkChoice{{Index: 0, Delta: delta, FinishReason: finish}},
		}
	}
	chunks := []*llmgatewayv1.StreamChatCompletionResponse{
		chunk(&llmgatewayv1.ChatCompletionDelta{Role: proto.String("assistant"), Content: proto.String("")}, nil),
		chunk(&llmgatewayv1.ChatCompletionDelta{Content: proto.String("One, ")}, nil),
		chunk(&llmgatewayv1.ChatCompletionDelta{Content: proto.String("two, ")}, nil),
		chunk(&llmgatewayv1.ChatCompletionDelta{Content: proto.String("three.")}, nil),
	}
	if f.streamErr != nil {
		chunks = chunks[:3]
	} else {
		chunks = append(chunks, chunk(&llmgatewayv1.ChatCompletionDelta{}, proto.String("stop")))
		if req.GetStreamOptions().GetIncludeUsage() {
			chunks = append(chunks, &llmgatewayv1.StreamChatCompletionResponse{
				Id: "chatcmpl-2", Object: "chat.completion.chunk", Created: 1700000001, Model: req.GetModel(),
				Usage: &llmgatewayv1.Usage{PromptTokens: 7, CompletionTokens: 4, TotalTokens: 11},
			})
		}
	}
	for _, c := range chunks {
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return f.streamErr
}

// startFake serves f on an in-memory listener and returns the dial option that reaches it.
func startFake(t *testing.T, f *fakeService) grpc.DialOption {
	t.Helper()
	return serveInMemory(t, func(srv *grpc.Server) { llmgatewayv1.RegisterChatCompletionServiceServer(srv, f) })
}

// serveInMemory serves what register adds on an in-memory listener; the dial option reaches it.
func serveInMemory(t *testing.T, register func(*grpc.Server)) grpc.DialOption {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return lis.DialContext(ctx)
	})
}

// runCLI runs the command against f with the given flags (the -addr is set to the in-memory target).
func runCLI(t *testing.T, f *fakeService, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	dial := startFake(t, f)
	var out, errOut bytes.Buffer
	code = run(append([]string{"-addr", "passthrough:///bufnet"}, args...), &out, &errOut, dial)
	return code, out.String(), errOut.String()
}

// bridgeError is a status exactly as the bridge sends it: clients/testdata/errors/NAME.json, written by the
// bridge's own code (tests/client_fixtures.py), so this fake sends the ErrorInfo keys docs/errors.md names.
func bridgeError(t *testing.T, name string) error {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "errors", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var st spb.Status
	if err := protojson.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return status.FromProto(&st).Err()
}

func TestUnaryText(t *testing.T) {
	f := &fakeService{}
	code, out, errOut := runCLI(t, f, "-model", "gpt-4o", "-prompt", "Say hello",
		"-api-key", "iak_secret", "-metadata", "x-correlation-id=abc", "-metadata", "X-Team=search=1")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	if out != "Hello there!\n" {
		t.Errorf("stdout = %q, want %q", out, "Hello there!\n")
	}
	if errOut != "" {
		t.Errorf("stderr = %q, want empty", errOut)
	}
	req := f.lastReq
	if req.GetModel() != "gpt-4o" || len(req.GetMessages()) != 1 {
		t.Fatalf("request = %v", req)
	}
	if m := req.GetMessages()[0]; m.GetRole() != "user" || m.GetContentText() != "Say hello" || m.GetContent() != nil {
		t.Errorf("message = %v", m)
	}
	if req.GetStreamOptions() != nil {
		t.Errorf("unary request has stream_options: %v", req.GetStreamOptions())
	}
	if got := f.lastMD.Get("authorization"); len(got) != 1 || got[0] != "Bearer iak_secret" {
		t.Errorf("authorization = %q", got)
	}
	if got := f.lastMD.Get("x-correlation-id"); len(got) != 1 || got[0] != "abc" {
		t.Errorf("x-correlation-id = %q", got)
	}
	if got := f.lastMD.Get("x-team"); len(got) != 1 || got[0] != "search=1" {
		t.Errorf("x-team = %q", got)
	}
}

func TestUnaryNoAPIKeySendsNoAuthorization(t *testing.T) {
	f := &fakeService{}
	if code, _, errOut := runCLI(t, f, "-model", "m", "-prompt", "p"); code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	if got := f.lastMD.Get("authorization"); len(got) != 0 {
		t.Errorf("authorization = %q, want none", got)
	}
}

func TestUnaryJSONAndUsage(t *testing.T) {
	f := &fakeService{}
	code, out, errOut := runCLI(t, f, "-model", "gpt-4o", "-prompt", "hi", "-json", "-include-usage")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 JSON line, got %d: %q", len(lines), out)
	}
	// Proto field names (the upstream JSON keys), compact.
	for _, want := range []string{`"finish_reason":"stop"`, `"total_tokens":8`, `"created":"1700000000"`} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("JSON %s lacks %s", lines[0], want)
		}
	}
	var resp llmgatewayv1.CreateChatCompletionResponse
	if err := protojson.Unmarshal([]byte(lines[0]), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.GetChoices()[0].GetMessage().GetContent() != "Hello there!" || resp.GetModel() != "gpt-4o" {
		t.Errorf("decoded = %v", &resp)
	}
	// -json prints the usage inside the JSON, not on stderr.
	if errOut != "" {
		t.Errorf("stderr = %q, want empty", errOut)
	}
}

func TestUnaryUsageText(t *testing.T) {
	code, out, errOut := runCLI(t, &fakeService{}, "-model", "m", "-prompt", "p", "-include-usage")
	if code != 0 || out != "Hello there!\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if errOut != "usage: prompt_tokens=5 completion_tokens=3 total_tokens=8\n" {
		t.Errorf("stderr = %q", errOut)
	}
}

func TestVerbosePrintsHeadersAndTrailers(t *testing.T) {
	code, _, errOut := runCLI(t, &fakeService{}, "-model", "m", "-prompt", "p", "-v")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	for _, want := range []string{"header x-request-id: req-42\n", "header content-type: application/grpc\n",
		"trailer x-upstream-ms: 12\n"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
}

func TestStreamConcatenatesDeltas(t *testing.T) {
	f := &fakeService{}
	code, out, errOut := runCLI(t, f, "-model", "gpt-4o", "-prompt", "count", "-stream", "-include-usage", "-v")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	if out != "One, two, three.\n" {
		t.Errorf("stdout = %q", out)
	}
	if !f.lastReq.GetStreamOptions().GetIncludeUsage() {
		t.Errorf("stream_options.include_usage not sent: %v", f.lastReq)
	}
	for _, want := range []string{"header x-request-id: req-43\n",
		"usage: prompt_tokens=7 completion_tokens=4 total_tokens=11\n"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
}

func TestStreamWithoutIncludeUsage(t *testing.T) {
	f := &fakeService{}
	code, out, errOut := runCLI(t, f, "-model", "m", "-prompt", "p", "-stream")
	if code != 0 || out != "One, two, three.\n" || errOut != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if f.lastReq.GetStreamOptions() != nil {
		t.Errorf("stream_options sent without -include-usage: %v", f.lastReq.GetStreamOptions())
	}
}

func TestStreamJSONOneLinePerChunk(t *testing.T) {
	code, out, errOut := runCLI(t, &fakeService{}, "-model", "m", "-prompt", "p", "-stream", "-json", "-include-usage")
	if code != 0 {
		t.Fatalf("exit %d, stderr: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 6 { // role, 3 content, finish, usage
		t.Fatalf("want 6 lines, got %d: %q", len(lines), out)
	}
	var text strings.Builder
	for i, l := range lines {
		var chunk llmgatewayv1.StreamChatCompletionResponse
		if err := protojson.Unmarshal([]byte(l), &chunk); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		if !json.Valid([]byte(l)) || strings.Contains(l, "\n") {
			t.Fatalf("line %d not one JSON line: %q", i, l)
		}
		for _, c := range chunk.GetChoices() {
			text.WriteString(c.GetDelta().GetContent())
		}
	}
	if text.String() != "One, two, three." {
		t.Errorf("concatenated = %q", text.String())
	}
	if !strings.Contains(lines[5], `"usage":{"prompt_tokens":7`) || strings.Contains(lines[5], "choices") {
		t.Errorf("usage chunk = %s", lines[5])
	}
}

func TestStreamAccumulatePrintsTheFoldedReply(t *testing.T) {
	code, out, errOut := runCLI(t, &fakeService{}, "-model", "m", "-prompt", "p", "-stream", "-accumulate", "-include-usage")
	if code != 0 || out != "One, two, three.\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if errOut != "usage: prompt_tokens=7 completion_tokens=4 total_tokens=11\n" {
		t.Errorf("stderr = %q", errOut)
	}
	code, out, errOut = runCLI(t, &fakeService{}, "-model", "m", "-prompt", "p", "-stream", "-accumulate", "-json", "-include-usage")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := `{"id":"chatcmpl-2","object":"chat.completion","created":"1700000001","model":"m",` +
		`"choices":[{"message":{"role":"assistant","content":"One, two, three."},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}` + "\n"
	if out != want {
		t.Errorf("stdout =\n%s\nwant\n%s", out, want)
	}
}

func TestStreamAccumulateError(t *testing.T) {
	f := &fakeService{streamErr: status.Error(codes.Unavailable, "upstream closed the stream early")}
	code, out, errOut := runCLI(t, f, "-model", "m", "-prompt", "p", "-stream", "-accumulate")
	if code != 1 || out != "" || errOut != "UNAVAILABLE: upstream closed the stream early\ngrpc-status: UNAVAILABLE\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestUnaryErrorDetails(t *testing.T) {
	for name, want := range map[string]string{
		"upstream_rate_limited": "RESOURCE_EXHAUSTED: upstream HTTP 429: Rate limit exceeded: 100 requests per 60 s\n" +
			"error_info: reason=UPSTREAM_RATE_LIMITED domain=grpc-bridge.prisme.ai metadata={correlationId=corr-42, " +
			"httpStatus=429, upstreamCode=rate_limit_exceeded, upstreamHost=gateway.example.com}\n" +
			"retry_info: retry_delay=3s\n" +
			"grpc-status: RESOURCE_EXHAUSTED\n",
		"upstream_invalid_request": "INVALID_ARGUMENT: upstream HTTP 400: messages[0].content must not be empty\n" +
			"error_info: reason=UPSTREAM_INVALID_REQUEST domain=grpc-bridge.prisme.ai metadata={correlationId=req-7, " +
			"httpStatus=400, upstreamCode=invalid_value, upstreamHost=gateway.example.com, " +
			"upstreamParam=messages[0].content, upstreamType=invalid_request_error}\n" +
			"bad_request: field=messages[0].content description=messages[0].content must not be empty\n" +
			"grpc-status: INVALID_ARGUMENT\n",
		"caller_credentials_required": "UNAUTHENTICATED: no credentials: this bridge uses its own upstream key only " +
			"for callers it authenticated with an allowed client certificate (mTLS): send your own credentials as " +
			"'authorization: Bearer <token or iak_ key>' or 'x-prismeai-api-key: <iak_ key>' metadata\n" +
			"error_info: reason=CALLER_CREDENTIALS_REQUIRED domain=grpc-bridge.prisme.ai metadata={}\n" +
			"grpc-status: UNAUTHENTICATED\n",
		"caller_not_allowed": "PERMISSION_DENIED: client certificate spiffe://cluster.local/ns/team-b/sa/reports may " +
			"not call this bridge: its identity is not in the bridge's allow-list (--tls-client-allow); ask the " +
			"bridge's operator to add it\n" +
			"error_info: reason=CALLER_NOT_ALLOWED domain=grpc-bridge.prisme.ai " +
			"metadata={callerIdentity=spiffe://cluster.local/ns/team-b/sa/reports}\n" +
			"grpc-status: PERMISSION_DENIED\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := &fakeService{unaryErr: bridgeError(t, name)}
			code, out, errOut := runCLI(t, f, "-model", "m", "-prompt", "p")
			if code != 1 {
				t.Fatalf("exit %d, want 1", code)
			}
			if out != "" {
				t.Errorf("stdout = %q, want empty", out)
			}
			if errOut != want {
				t.Errorf("stderr =\n%s\nwant\n%s", errOut, want)
			}
		})
	}
}

func TestStreamErrorAfterChunks(t *testing.T) {
	f := &fakeService{streamErr: status.Error(codes.Unavailable, "upstream closed the stream early")}
	code, out, errOut := runCLI(t, f, "-model", "m", "-prompt", "p", "-stream")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if out != "One, two, \n" {
		t.Errorf("stdout = %q (partial text, newline-terminated)", out)
	}
	want := "UNAVAILABLE: upstream closed the stream early\ngrpc-status: UNAVAILABLE\n"
	if errOut != want {
		t.Errorf("stderr = %q, want %q", errOut, want)
	}
}

func TestDeadline(t *testing.T) {
	f := &fakeService{delay: 5 * time.Second}
	start := time.Now()
	code, _, errOut := runCLI(t, f, "-model", "m", "-prompt", "p", "-timeout", "100ms")
	if code != 1 || !strings.HasSuffix(errOut, "grpc-status: DEADLINE_EXCEEDED\n") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("deadline not applied: took %v", time.Since(start))
	}
}

func TestUnknownDetailType(t *testing.T) {
	st, err := status.New(codes.Internal, "boom").WithDetails(&durationpb.Duration{Seconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI(t, &fakeService{unaryErr: st.Err()}, "-model", "m", "-prompt", "p")
	want := "INTERNAL: boom\ndetail: type=type.googleapis.com/google.protobuf.Duration\ngrpc-status: INTERNAL\n"
	if code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q, want %q", code, errOut, want)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-prompt", "p"}, // no model
		{"-model", "m"},  // no prompt
		{"-model", "m", "-prompt", "p", "-metadata", "novalue"}, // bad metadata
		{"-model", "m", "-prompt", "p", "-metadata", "bad key=v"},
		{"-model", "m", "-prompt", "p", "extra"},            // stray argument
		{"-model", "m", "-prompt", "p", "-accumulate"},      // without -stream
		{"-model", "m", "-prompt", "p", "-api-key", "a\nb"}, // not one line
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if errOut.Len() == 0 {
			t.Errorf("%q: no message on stderr", args)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, c := range []struct {
		d    *durationpb.Duration
		want string
	}{
		{&durationpb.Duration{Seconds: 2}, "2s"},
		{&durationpb.Duration{Seconds: 2, Nanos: 500_000_000}, "2.5s"},
		{&durationpb.Duration{Nanos: 125_000_000}, "0.125s"},
		{&durationpb.Duration{Nanos: 1}, "0.000000001s"},
		{&durationpb.Duration{Seconds: -1, Nanos: -500_000_000}, "-1.5s"},
		{nil, "0s"},
	} {
		if got := formatDuration(c.d); got != c.want {
			t.Errorf("formatDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
