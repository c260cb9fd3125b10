package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
)

// fakeCatalogue serves ModelService (five models, pages of page_size) and EmbeddingService (vectors
// whose first value is the text's length), recording what it received.
type fakeCatalogue struct {
	llmgatewayv1.UnimplementedModelServiceServer
	llmgatewayv1.UnimplementedEmbeddingServiceServer

	mu       sync.Mutex
	listReqs []*llmgatewayv1.ListModelsRequest
	embedReq *llmgatewayv1.CreateEmbeddingRequest
	lastMD   metadata.MD
	embedErr error
}

var fakeModels = []string{"echo", "bedrock/anthropic.claude-3-haiku", "eu.anthropic.claude-sonnet-4-20250514-v1:0", "text-embedding-3-small", "o3"}

func (f *fakeCatalogue) ListModels(ctx context.Context, req *llmgatewayv1.ListModelsRequest) (*llmgatewayv1.ListModelsResponse, error) {
	f.mu.Lock()
	f.listReqs = append(f.listReqs, proto.Clone(req).(*llmgatewayv1.ListModelsRequest))
	f.mu.Unlock()
	start := 0
	if req.GetPageToken() != "" {
		start = int(req.GetPageToken()[0] - '0')
	}
	end := min(start+int(req.GetPageSize()), len(fakeModels))
	resp := &llmgatewayv1.ListModelsResponse{TotalSize: int32(len(fakeModels))}
	for _, id := range fakeModels[start:end] {
		resp.Models = append(resp.Models, &llmgatewayv1.Model{ModelId: id, Type: "completion"})
	}
	if end < len(fakeModels) {
		resp.NextPageToken = string(rune('0' + end))
	}
	return resp, nil
}

func (f *fakeCatalogue) CreateEmbedding(ctx context.Context, req *llmgatewayv1.CreateEmbeddingRequest) (*llmgatewayv1.CreateEmbeddingResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.embedReq, f.lastMD = req, md
	f.mu.Unlock()
	if f.embedErr != nil {
		return nil, f.embedErr
	}
	resp := &llmgatewayv1.CreateEmbeddingResponse{Object: "list", Model: req.GetModel(),
		Usage: &llmgatewayv1.EmbeddingUsage{PromptTokens: 4, TotalTokens: 4}}
	for i, text := range req.GetInput() {
		vector := make([]float32, max(req.GetDimensions(), 3))
		vector[0] = float32(len(text))
		resp.Data = append(resp.Data, &llmgatewayv1.Embedding{Index: int32(i), Embedding: vector, Object: "embedding"})
	}
	return resp, nil
}

func runCatalogue(t *testing.T, f *fakeCatalogue, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	dial := serveInMemory(t, func(srv *grpc.Server) {
		llmgatewayv1.RegisterModelServiceServer(srv, f)
		llmgatewayv1.RegisterEmbeddingServiceServer(srv, f)
	})
	var out, errOut bytes.Buffer
	argv := append([]string{args[0], "-addr", "passthrough:///bufnet"}, args[1:]...)
	code = run(argv, &out, &errOut, dial)
	return code, out.String(), errOut.String()
}

func TestModelsFollowsEveryPage(t *testing.T) {
	f := &fakeCatalogue{}
	code, out, errOut := runCatalogue(t, f, "models", "-page-size", "2", "-type", "completion",
		"-tags", "eu, fast", "-model-ids", "a/b,c:0", "-visible-only", "-enabled", "false",
		"-brand", "Anthropic", "-capability", "vision", "-search", "claude")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := ""
	for _, id := range fakeModels {
		want += id + "\tcompletion\n"
	}
	if out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	if len(f.listReqs) != 3 {
		t.Fatalf("%d calls, want 3 pages", len(f.listReqs))
	}
	first := f.listReqs[0]
	if first.GetPageSize() != 2 || first.GetType() != "completion" || !first.GetVisibleOnly() ||
		first.Enabled == nil || first.GetEnabled() || first.GetBrand() != "Anthropic" ||
		first.GetCapability() != "vision" || first.GetSearch() != "claude" ||
		strings.Join(first.GetTags(), "|") != "eu|fast" || strings.Join(first.GetModelIds(), "|") != "a/b|c:0" {
		t.Errorf("first request %v", first)
	}
	if f.listReqs[1].GetPageToken() != "2" || f.listReqs[2].GetPageToken() != "4" || f.listReqs[2].GetType() != "completion" {
		t.Errorf("tokens and filters of later pages: %v", f.listReqs[1:])
	}
}

func TestModelsJSONOneLinePerPage(t *testing.T) {
	code, out, errOut := runCatalogue(t, &fakeCatalogue{}, "models", "-page-size", "3", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 pages: %q", len(lines), out)
	}
	var page struct {
		Models []struct {
			ModelID string `json:"model_id"`
		} `json:"models"`
		NextPageToken string `json:"next_page_token"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Models) != 3 || page.Models[1].ModelID != "bedrock/anthropic.claude-3-haiku" || page.NextPageToken != "3" {
		t.Errorf("first page %+v", page)
	}
}

func TestEmbedTextAndUsage(t *testing.T) {
	f := &fakeCatalogue{}
	code, out, errOut := runCatalogue(t, f, "embed", "-model", "text-embedding-3-small", "-input", "Hello",
		"-input", "big world", "-dimensions", "256", "-encoding-format", "base64", "-user", "u-1",
		"-api-key", "iak_secret", "-metadata", "x-correlation-id=c-1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if want := "embedding 0: 256 dimensions\nembedding 1: 256 dimensions\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	if want := "usage: prompt_tokens=4 total_tokens=4\n"; errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	req := f.embedReq
	if strings.Join(req.GetInput(), "|") != "Hello|big world" || req.GetDimensions() != 256 ||
		req.GetEncodingFormat() != "base64" || req.GetUser() != "u-1" {
		t.Errorf("request %v", req)
	}
	for key, want := range map[string]string{"authorization": "Bearer iak_secret", "x-correlation-id": "c-1"} {
		if got := f.lastMD.Get(key); len(got) != 1 || got[0] != want {
			t.Errorf("metadata %s = %q, want %q", key, got, want)
		}
	}
}

func TestEmbedJSON(t *testing.T) {
	f := &fakeCatalogue{}
	code, out, errOut := runCatalogue(t, f, "embed", "-model", "m", "-input", "abcd", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var resp struct {
		Data []struct {
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 1 || resp.Data[0].Embedding[0] != 4 || errOut != "" {
		t.Errorf("stdout %q stderr %q", out, errOut)
	}
	if f.embedReq.Dimensions != nil {
		t.Errorf("dimensions sent unasked: %v", f.embedReq.GetDimensions())
	}
}

func TestEmbedErrorDetails(t *testing.T) {
	st, _ := status.New(codes.InvalidArgument, "upstream HTTP 403: dimensions=4 is not supported").WithDetails(
		&errdetails.ErrorInfo{Reason: "UPSTREAM_INVALID_REQUEST", Domain: "grpc-bridge.prisme.ai",
			Metadata: map[string]string{"upstreamCode": "INVALID_DIMENSIONS", "httpStatus": "403"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "dimensions", Description: "use one of [256, 1536]"}}},
	)
	code, out, errOut := runCatalogue(t, &fakeCatalogue{embedErr: st.Err()}, "embed", "-model", "m", "-input", "x")
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	for _, want := range []string{
		"INVALID_ARGUMENT: upstream HTTP 403: dimensions=4 is not supported\n",
		"error_info: reason=UPSTREAM_INVALID_REQUEST domain=grpc-bridge.prisme.ai " +
			"metadata={httpStatus=403, upstreamCode=INVALID_DIMENSIONS}\n",
		"bad_request: field=dimensions description=use one of [256, 1536]\n",
		"grpc-status: INVALID_ARGUMENT\n",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
}

func TestCatalogueUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"embed", "-input", "x"}, // no model
		{"embed", "-model", "m"}, // no input
		{"embed", "-model", "m", "-input", "x", "-dimensions", "-1"},
		{"embed", "-model", "m", "-input", "x", "stray"}, // stray argument
		{"models", "-enabled", "maybe"},
		{"models", "-page-size", "-2"},
		{"models", "-prompt", "p"}, // a chat flag
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
