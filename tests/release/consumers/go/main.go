// Command prisme-consumer calls a live bridge the way a Go service does, with the released client module:
// a unary chat call, the same request streamed and folded, the model catalogue, an embedding, and a
// refused call read with the error-detail helpers. It prints one JSON object for tests/release to check.
//
//	PRISME_BRIDGE=127.0.0.1:50051 PRISME_API_KEY=... go run .
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
	"github.com/prismeai/prisme-grpc-bridge/clients/go/prisme"
)

func main() {
	conn, err := prisme.NewClient(os.Getenv("PRISME_BRIDGE"), prisme.Plaintext())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	token, err := prisme.NewBearer(os.Getenv("PRISME_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	auth := grpc.PerRPCCredentials(token.AllowingPlaintext())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	chat := llmgatewayv1.NewChatCompletionServiceClient(conn)
	request := &llmgatewayv1.CreateChatCompletionRequest{
		Model:    "echo",
		Messages: []*llmgatewayv1.ChatMessage{{Role: "user", ContentText: proto.String("Hello from Go")}},
	}
	unary, err := chat.CreateChatCompletion(ctx, request, auth)
	check(err)
	streamed := proto.CloneOf(request)
	streamed.StreamOptions = &llmgatewayv1.StreamOptions{IncludeUsage: proto.Bool(true)}
	stream, err := chat.StreamChatCompletion(ctx, streamed, auth)
	check(err)
	folded, err := prisme.Accumulate(stream)
	check(err)

	// The gateway's catalogue takes an org key (iak_*) as x-prismeai-api-key, a user identity as Bearer.
	orgKey := metadata.AppendToOutgoingContext(ctx, "x-prismeai-api-key", os.Getenv("PRISME_API_KEY"))
	models, err := llmgatewayv1.NewModelServiceClient(conn).ListModels(orgKey,
		&llmgatewayv1.ListModelsRequest{PageSize: 3, Type: "embeddings"})
	check(err)
	embedded, err := llmgatewayv1.NewEmbeddingServiceClient(conn).CreateEmbedding(ctx,
		&llmgatewayv1.CreateEmbeddingRequest{Model: "text-embedding-mock", Input: []string{"Hello, bridge!"}}, auth)
	check(err)

	_, refused := chat.CreateChatCompletion(ctx, &llmgatewayv1.CreateChatCompletionRequest{
		Model: "error-429", Messages: request.GetMessages(),
	}, auth)
	delay, _ := prisme.RetryDelay(refused)

	out, err := json.Marshal(map[string]any{
		"unary":        unary.GetChoices()[0].GetMessage().GetContent(),
		"folded":       folded.GetChoices()[0].GetMessage().GetContent(),
		"total_tokens": folded.GetUsage().GetTotalTokens(),
		"models":       len(models.GetModels()),
		"dimensions":   len(embedded.GetData()[0].GetEmbedding()),
		"code":         status.Code(refused).String(),
		"reason":       prisme.Reason(refused),
		"retry_delay":  delay.String(),
	})
	check(err)
	fmt.Println(string(out))
}

func check(err error) {
	if err != nil {
		log.Fatalf("%v (reason %q)", err, prisme.Reason(err))
	}
}
