// Command goping opens one StreamChatCompletion through the clients/go dial helper with client keepalive
// pings every -ping (grpc-go's minimum is 10 s) and reads it to its end. With model slow-<ms> the mock
// gateway holds the upstream reply, so the stream stays idle (no data either way) while the client pings:
// a server whose ping policy is stricter than the client answers with GOAWAY too_many_pings and the
// stream fails. Output, one line on stdout: "OK <chunks>" or "<CODE> <message>" (exit status 1).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
	"github.com/prismeai/prisme-grpc-bridge/clients/go/prisme"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "bridge address")
	model := flag.String("model", "slow-30000", "model (slow-<ms>: the stream is idle that long)")
	ping := flag.Duration("ping", 10*time.Second, "client keepalive ping interval")
	limit := flag.Duration("timeout", 2*time.Minute, "deadline of the call")
	flag.Parse()

	// NewClient's options first, ours after: the keepalive interval under test wins.
	conn, err := prisme.NewClient(*addr, prisme.Plaintext(), grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time: *ping, Timeout: 5 * time.Second, PermitWithoutStream: true,
	}))
	if err != nil {
		fmt.Println("DIAL", err)
		os.Exit(1)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	stream, err := llmgatewayv1.NewChatCompletionServiceClient(conn).StreamChatCompletion(ctx, &llmgatewayv1.CreateChatCompletionRequest{
		Model:    *model,
		Messages: []*llmgatewayv1.ChatMessage{{Role: "user", ContentText: proto.String("still there")}},
	})
	chunks := 0
	for err == nil {
		_, err = stream.Recv()
		if err == nil {
			chunks++
		}
	}
	if err == io.EOF {
		fmt.Println("OK", chunks)
		return
	}
	st := status.Convert(err)
	fmt.Println(st.Code(), st.Message())
	os.Exit(1)
}
