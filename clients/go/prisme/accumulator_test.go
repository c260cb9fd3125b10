package prisme

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
)

// vectorsDir holds the accumulator vectors shared with the Python and Java clients.
const vectorsDir = "../../testdata/accumulator"

type vector struct {
	Description string            `json:"description"`
	Chunks      []json.RawMessage `json:"chunks"`
	Expected    json.RawMessage   `json:"expected"`
}

func loadVector(t *testing.T, path string) ([]*llmgatewayv1.StreamChatCompletionResponse, *llmgatewayv1.CreateChatCompletionResponse) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	chunks := make([]*llmgatewayv1.StreamChatCompletionResponse, len(v.Chunks))
	for i, c := range v.Chunks {
		chunks[i] = &llmgatewayv1.StreamChatCompletionResponse{}
		if err := protojson.Unmarshal(c, chunks[i]); err != nil {
			t.Fatalf("%s: chunk %d: %v", path, i, err)
		}
	}
	expected := &llmgatewayv1.CreateChatCompletionResponse{}
	if err := protojson.Unmarshal(v.Expected, expected); err != nil {
		t.Fatalf("%s: expected: %v", path, err)
	}
	return chunks, expected
}

func TestAccumulatorVectors(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(vectorsDir, "*.json"))
	if err != nil || len(paths) < 10 {
		t.Fatalf("accumulator vectors missing under %s: %v %v", vectorsDir, paths, err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			chunks, expected := loadVector(t, path)
			var acc Accumulator
			for _, c := range chunks {
				acc.Add(c)
			}
			if got := acc.Response(); !proto.Equal(got, expected) {
				t.Errorf("got\n%s\nwant\n%s", protojson.Format(got), protojson.Format(expected))
			}
			if acc.Chunks() != len(chunks) {
				t.Errorf("Chunks() = %d, want %d", acc.Chunks(), len(chunks))
			}
		})
	}
}

func TestResponseIsASnapshot(t *testing.T) {
	chunks, expected := loadVector(t, filepath.Join(vectorsDir, "tool_calls.json"))
	var acc Accumulator
	for _, c := range chunks[:4] {
		acc.Add(c)
	}
	partial := acc.Response()
	args := partial.GetChoices()[0].GetMessage().GetToolCalls()[0].GetFunction().GetArguments()
	if args != `{"city": "Paris"` {
		t.Fatalf("partial arguments = %q", args)
	}
	for _, c := range chunks[4:] {
		acc.Add(c)
	}
	if got := partial.GetChoices()[0].GetMessage().GetToolCalls()[0].GetFunction().GetArguments(); got != args {
		t.Errorf("an earlier Response changed: %q", got)
	}
	if !proto.Equal(acc.Response(), expected) {
		t.Errorf("final response differs")
	}
}

// fakeStream replays chunks, then returns err (io.EOF for a clean end).
type fakeStream struct {
	chunks []*llmgatewayv1.StreamChatCompletionResponse
	err    error
}

func (s *fakeStream) Recv() (*llmgatewayv1.StreamChatCompletionResponse, error) {
	if len(s.chunks) == 0 {
		return nil, s.err
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	return c, nil
}
