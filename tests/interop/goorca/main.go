// Command goorca sends unary CreateChatCompletion calls, one at a time, through one grpc-go client
// that balances over several bridges (a manual resolver with their addresses, as DNS gives a headless
// Service's pods) and counts which bridge answered each. POLICY weighted_round_robin dials with
// clients/go's prisme.WeightedRoundRobin (the bridges' ORCA load reports weight them); round_robin
// with NewClient's default. Calls during the first SETTLE_SECONDS are not counted (weights start after
// the blackout). The same arguments as clients/java's WeightedRoundRobinProbe:
//
//	goorca [-blackout 1s] [-update 100ms] ADDRESSES POLICY SETTLE_SECONDS CALLS
//
// Output, one line on stdout: JSON {"address": calls, ...}; exit status 1 on any failed call.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/protobuf/proto"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
	"github.com/prismeai/prisme-grpc-bridge/clients/go/prisme"
)

func main() {
	blackout := flag.Duration("blackout", time.Second, "weighted_round_robin blackoutPeriod")
	update := flag.Duration("update", 100*time.Millisecond, "weighted_round_robin weightUpdatePeriod")
	flag.Parse()
	if flag.NArg() != 4 {
		fail("usage: goorca [flags] ADDRESSES POLICY SETTLE_SECONDS CALLS")
	}
	addrs, policy := flag.Arg(0), flag.Arg(1)
	seconds, err1 := strconv.Atoi(flag.Arg(2))
	calls, err2 := strconv.Atoi(flag.Arg(3))
	if err1 != nil || err2 != nil {
		fail("SETTLE_SECONDS and CALLS are whole numbers")
	}
	settle := time.Duration(seconds) * time.Second

	r := manual.NewBuilderWithScheme("bridges")
	state := resolver.State{}
	for _, a := range strings.Split(addrs, ",") {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	opts := []grpc.DialOption{grpc.WithResolvers(r)}
	switch policy {
	case "weighted_round_robin":
		opts = append(opts, prisme.WeightedRoundRobin(prisme.WeightedRoundRobinConfig{BlackoutPeriod: *blackout, WeightUpdatePeriod: *update}))
	case "round_robin": // NewClient's default
	default:
		fail("unknown POLICY %q", policy)
	}
	client, conn, err := prisme.NewChatClient("bridges:///pods", prisme.Plaintext(), opts...)
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()

	request := &llmgatewayv1.CreateChatCompletionRequest{
		Model:    "echo",
		Messages: []*llmgatewayv1.ChatMessage{{Role: "user", ContentText: proto.String("which pod?")}},
	}
	served := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var p peer.Peer
		if _, err := client.CreateChatCompletion(ctx, request, grpc.Peer(&p)); err != nil {
			fail("call: %v", err)
		}
		return p.Addr.String()
	}
	for end := time.Now().Add(settle); time.Now().Before(end); {
		served()
	}
	count := map[string]int{}
	for i := 0; i < calls; i++ {
		count[served()]++
	}
	out, _ := json.Marshal(count)
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}
