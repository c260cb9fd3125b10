package prisme_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
	"github.com/prismeai/prisme-grpc-bridge/clients/go/prisme"
)

// A service in the same cluster as the bridge: a headless Service, plaintext inside the mesh, the caller's
// token per call, a deadline, a stream folded into the unary reply, and the error details on failure.
func ExampleNewChatClient() {
	client, conn, err := prisme.NewChatClient("dns:///prisme-bridge.ai.svc.cluster.local:50051", prisme.Plaintext())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	token, err := prisme.NewBearer(os.Getenv("PRISME_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-correlation-id", "order-4711")
	req := &llmgatewayv1.CreateChatCompletionRequest{
		Model:         "gpt-4o",
		Messages:      []*llmgatewayv1.ChatMessage{{Role: "user", Content: structpb.NewStringValue("Say hello")}},
		StreamOptions: &llmgatewayv1.StreamOptions{IncludeUsage: proto.Bool(true)},
	}
	stream, err := client.StreamChatCompletion(ctx, req, grpc.PerRPCCredentials(token.AllowingPlaintext()))
	if err != nil {
		log.Fatal(err)
	}
	reply, err := prisme.Accumulate(stream)
	if delay, ok := prisme.RetryDelay(err); ok {
		log.Printf("%s: retry in %v", prisme.Reason(err), delay)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.GetChoices()[0].GetMessage().GetContent(), reply.GetUsage().GetTotalTokens())
}

// Folding chunks by hand, e.g. while printing them as they arrive.
func ExampleAccumulator() {
	chunk := func(delta *llmgatewayv1.ChatCompletionDelta, finish string) *llmgatewayv1.StreamChatCompletionResponse {
		c := &llmgatewayv1.ChatCompletionChunkChoice{Delta: delta}
		if finish != "" {
			c.FinishReason = proto.String(finish)
		}
		return &llmgatewayv1.StreamChatCompletionResponse{Id: "chatcmpl-1", Model: "gpt-4o", Choices: []*llmgatewayv1.ChatCompletionChunkChoice{c}}
	}
	var acc prisme.Accumulator
	var pieces []string
	for _, c := range []*llmgatewayv1.StreamChatCompletionResponse{
		chunk(&llmgatewayv1.ChatCompletionDelta{Role: proto.String("assistant"), Content: proto.String("")}, ""),
		chunk(&llmgatewayv1.ChatCompletionDelta{Content: proto.String("Hello")}, ""),
		chunk(&llmgatewayv1.ChatCompletionDelta{Content: proto.String(", world")}, ""),
		chunk(&llmgatewayv1.ChatCompletionDelta{}, "stop"),
	} {
		pieces = append(pieces, strconv.Quote(c.GetChoices()[0].GetDelta().GetContent()))
		acc.Add(c)
	}
	fmt.Println(strings.Join(pieces, " "))
	reply := acc.Response()
	fmt.Printf("%s %s: %q (%s)\n", reply.GetObject(), reply.GetId(), reply.GetChoices()[0].GetMessage().GetContent(),
		reply.GetChoices()[0].GetFinishReason())
	// Output:
	// "" "Hello" ", world" ""
	// chat.completion chatcmpl-1: "Hello, world" (stop)
}

// Deciding whether and when to retry a failed call. The error here is built the way the bridge sends an
// upstream HTTP 429 with Retry-After: 7.
func ExampleRetryDelay() {
	st, _ := status.New(codes.ResourceExhausted, "upstream HTTP 429: Rate limit exceeded").WithDetails(
		&errdetails.ErrorInfo{Reason: "UPSTREAM_RATE_LIMITED", Domain: "grpc-bridge.prisme.ai"},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(7 * time.Second)},
	)
	err := st.Err() // as returned by client.CreateChatCompletion

	if delay, ok := prisme.RetryDelay(err); ok {
		fmt.Printf("%s %s: retry after %v\n", status.Code(err), prisme.Reason(err), delay)
	}
	// Output:
	// ResourceExhausted UPSTREAM_RATE_LIMITED: retry after 7s
}
