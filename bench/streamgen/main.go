// Command streamgen is the benchmark's gRPC load generator for calls ghz cannot time the way we need:
// server-streaming calls with time to first message, and (as a cross-check of ghz) unary calls.
//
// It needs no generated code: the request is a serialized protobuf message read from a file and
// responses are counted, not decoded (a pass-through codec), so the client costs the same whatever the
// server sends. All workers share one HTTP/2 connection, as ghz does with its default --connections=1;
// -connections N spreads them over N connections (round robin), for servers of several processes.
//
// Output: one JSON object on stdout (see result). Warm-up calls run first and are not counted.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// rawCodec sends and receives message bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = data
	return nil
}

func (rawCodec) Name() string { return "proto" }

type sample struct {
	total  time.Duration
	first  time.Duration // stream: first message; unary: = total
	chunks int
}

type stats struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

type result struct {
	Generator    string         `json:"generator"`
	Count        int            `json:"count"`
	Errors       int            `json:"errors"`
	ErrorSamples map[string]int `json:"error_samples"`
	DurationS    float64        `json:"duration_s"`
	RPS          float64        `json:"rps"`
	LatencyMS    stats          `json:"latency_ms"`
	FirstMS      *stats         `json:"first_ms,omitempty"`
	Chunks       int            `json:"chunks,omitempty"`
	ChunksPerS   float64        `json:"chunks_per_s,omitempty"`
	ChunksPerRPC float64        `json:"chunks_per_rpc,omitempty"`
	CPUS         float64        `json:"cpu_s"`
}

func percentiles(values []time.Duration) stats {
	if len(values) == 0 {
		return stats{}
	}
	sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	at := func(p float64) float64 {
		// nearest-rank percentile
		rank := int(math.Ceil(p/100*float64(len(values)))) - 1
		if rank < 0 {
			rank = 0
		}
		return ms(values[rank])
	}
	var sum time.Duration
	for _, v := range values {
		sum += v
	}
	return stats{P50: at(50), P90: at(90), P99: at(99), Mean: ms(sum) / float64(len(values)), Max: ms(values[len(values)-1])}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func call(ctx context.Context, conn *grpc.ClientConn, method string, stream bool, req []byte, timeout time.Duration) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	if !stream {
		var resp []byte
		err := conn.Invoke(ctx, method, &req, &resp)
		d := time.Since(start)
		return sample{total: d, first: d, chunks: 1}, err
	}
	desc := &grpc.StreamDesc{ServerStreams: true}
	cs, err := conn.NewStream(ctx, desc, method)
	if err != nil {
		return sample{}, err
	}
	if err := cs.SendMsg(&req); err != nil {
		return sample{}, err
	}
	if err := cs.CloseSend(); err != nil {
		return sample{}, err
	}
	s := sample{}
	for {
		var msg []byte
		err := cs.RecvMsg(&msg)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sample{}, err
		}
		if s.chunks == 0 {
			s.first = time.Since(start)
		}
		s.chunks++
	}
	s.total = time.Since(start)
	return s, nil
}

// run keeps `concurrency` calls in flight until `duration` has passed; calls already started finish.
func run(conns []*grpc.ClientConn, method string, stream bool, req []byte, concurrency int, duration, timeout time.Duration) ([]sample, map[string]int, time.Duration) {
	var mu sync.Mutex
	var samples []sample
	errs := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(duration)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		conn := conns[w%len(conns)]
		go func() {
			defer wg.Done()
			local := make([]sample, 0, 4096)
			localErrs := map[string]int{}
			for time.Now().Before(deadline) {
				s, err := call(context.Background(), conn, method, stream, req, timeout)
				if err != nil {
					localErrs[status.Code(err).String()]++
					continue
				}
				local = append(local, s)
			}
			mu.Lock()
			samples = append(samples, local...)
			for k, v := range localErrs {
				errs[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return samples, errs, time.Since(start)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "server address")
	method := flag.String("method", "/prisme.llmgateway.v1.ChatCompletionService/StreamChatCompletion", "full method name")
	stream := flag.Bool("stream", true, "server-streaming call (false: unary)")
	dataFile := flag.String("data", "", "file holding the serialized request message")
	concurrency := flag.Int("c", 16, "calls in flight")
	duration := flag.Duration("z", 10*time.Second, "measured duration")
	warmup := flag.Duration("warmup", 2*time.Second, "warm-up duration (not counted)")
	timeout := flag.Duration("timeout", 20*time.Second, "per-call timeout")
	connections := flag.Int("connections", 1, "HTTP/2 connections the calls are spread over")
	flag.Parse()

	req, err := os.ReadFile(*dataFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "streamgen:", err)
		os.Exit(2)
	}
	conns := make([]*grpc.ClientConn, max(1, *connections))
	for i := range conns {
		conn, err := grpc.NewClient(*addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
		)
		if err != nil {
			fmt.Fprintln(os.Stderr, "streamgen:", err)
			os.Exit(2)
		}
		defer conn.Close()
		conns[i] = conn
	}

	if *warmup > 0 {
		run(conns, *method, *stream, req, *concurrency, *warmup, *timeout)
	}
	cpu0 := cpuSeconds()
	samples, errs, elapsed := run(conns, *method, *stream, req, *concurrency, *duration, *timeout)
	cpu := cpuSeconds() - cpu0

	totals := make([]time.Duration, len(samples))
	firsts := make([]time.Duration, len(samples))
	chunks := 0
	for i, s := range samples {
		totals[i] = s.total
		firsts[i] = s.first
		chunks += s.chunks
	}
	nerr := 0
	for _, v := range errs {
		nerr += v
	}
	secs := elapsed.Seconds()
	out := result{
		Generator:    "streamgen (Go, grpc-go)",
		Count:        len(samples),
		Errors:       nerr,
		ErrorSamples: errs,
		DurationS:    secs,
		RPS:          float64(len(samples)) / secs,
		LatencyMS:    percentiles(totals),
		CPUS:         cpu,
	}
	if *stream {
		first := percentiles(firsts)
		out.FirstMS = &first
		out.Chunks = chunks
		out.ChunksPerS = float64(chunks) / secs
		if len(samples) > 0 {
			out.ChunksPerRPC = float64(chunks) / float64(len(samples))
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "streamgen:", err)
		os.Exit(1)
	}
}
