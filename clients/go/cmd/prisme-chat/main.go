// Command prisme-chat calls prisme.llmgateway.v1.ChatCompletionService (the prisme-grpc-bridge) with one
// user prompt and prints the answer. It is meant as a working example of the generated Go stubs.
//
//	prisme-chat -addr 127.0.0.1:50051 -model gpt-4o -prompt "Say hello"
//	prisme-chat -model gpt-4o -prompt "Count to 5" -stream -include-usage
//	prisme-chat -model gpt-4o -prompt "Count to 5" -stream -accumulate -json
//	prisme-chat models -type embeddings -page-size 50          (ModelService, every page: models.go)
//	prisme-chat embed -model text-embedding-3-small -input "Hi" -input "there" -json   (EmbeddingService)
//
// Output contract (scripts and tests rely on it):
//   - text mode: the assistant text of choice 0 on stdout, then a newline (with -stream, the content
//     deltas are written as they arrive); with -include-usage a "usage: ..." line on stderr.
//   - -json: each response (unary) or chunk (stream) on stdout as compact protojson, one per line,
//     field names as in the .proto (snake_case, the upstream JSON keys).
//   - -stream -accumulate: the chunks are folded (prisme.Accumulator) and printed as the unary reply
//     would be: the text once, or with -json one CreateChatCompletionResponse line.
//   - -v: "header KEY: VALUE" lines for the response headers and "trailer KEY: VALUE" for the trailers,
//     on stderr.
//   - on an RPC error: "CODE: message", one line per google.rpc detail, then "grpc-status: CODE" on
//     stderr, exit status 1. Bad flags exit with status 2.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
	"github.com/prismeai/prisme-grpc-bridge/clients/go/prisme"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// kvFlag collects repeated -metadata k=v flags.
type kvFlag [][2]string

func (f *kvFlag) String() string {
	parts := make([]string, 0, len(*f))
	for _, kv := range *f {
		parts = append(parts, kv[0]+"="+kv[1])
	}
	return strings.Join(parts, ",")
}

func (f *kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	k = strings.ToLower(k)
	if strings.Trim(k, "0123456789abcdefghijklmnopqrstuvwxyz_.-") != "" {
		return fmt.Errorf("%q is not a valid gRPC metadata key", k)
	}
	*f = append(*f, [2]string{k, v})
	return nil
}

// connFlags are the flags every command shares: where the bridge is, credentials, metadata, output.
type connFlags struct {
	addr     string
	timeout  time.Duration
	apiKey   string
	json     bool
	verbose  bool
	tls      bool
	metadata kvFlag
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "127.0.0.1:50051", "bridge address host:port (any gRPC target)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of each call (0 = none)")
	fs.StringVar(&c.apiKey, "api-key", "", "sent as 'authorization: Bearer <key>' metadata")
	fs.BoolVar(&c.json, "json", false, "print each response (or chunk) as protojson, one per line")
	fs.BoolVar(&c.verbose, "v", false, "print response header and trailer metadata to stderr")
	fs.BoolVar(&c.tls, "tls", false, "use TLS with the system roots (default: plaintext)")
	fs.Var(&c.metadata, "metadata", "extra request metadata key=value (repeatable)")
}

// parse parses args into fs; ok is false when the command should exit with code.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "prisme-chat: unexpected arguments: %q\n", fs.Args())
		return 2, false
	}
	return 0, true
}

// connect dials the bridge; on failure it reports on stderr and returns nil.
func (c *connFlags) connect(stderr io.Writer, dialOpts []grpc.DialOption) *grpc.ClientConn {
	security := prisme.Plaintext()
	if c.tls {
		security = prisme.TLS(nil)
	}
	if c.apiKey != "" {
		bearer, err := prisme.NewBearer(c.apiKey)
		if err != nil {
			fmt.Fprintf(stderr, "prisme-chat: -api-key: %v\n", err)
			return nil
		}
		// Plaintext is this command's documented default (loopback, a mesh): the key goes either way.
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearer.AllowingPlaintext()))
	}
	conn, err := prisme.NewClient(c.addr, security, dialOpts...)
	if err != nil {
		fmt.Fprintf(stderr, "prisme-chat: %v\n", err)
		return nil
	}
	return conn
}

// callContext is the context of one call: its deadline (-timeout) and the -metadata.
func (c *connFlags) callContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if c.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	return metadata.NewOutgoingContext(ctx, outgoingMetadata(c)), cancel
}

type options struct {
	connFlags
	model        string
	prompt       string
	stream       bool
	accumulate   bool
	includeUsage bool
}

// run is main without the process: it returns the exit status. Extra dial options are for tests
// (an in-memory connection).
func run(args []string, stdout, stderr io.Writer, dialOpts ...grpc.DialOption) int {
	if len(args) > 0 {
		switch args[0] {
		case "models":
			return runModels(args[1:], stdout, stderr, dialOpts)
		case "embed":
			return runEmbed(args[1:], stdout, stderr, dialOpts)
		}
	}
	var o options
	fs := flag.NewFlagSet("prisme-chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.register(fs)
	fs.StringVar(&o.model, "model", "", "model id as the gateway names it (required)")
	fs.StringVar(&o.prompt, "prompt", "", "user message to send (required)")
	fs.BoolVar(&o.stream, "stream", false, "call StreamChatCompletion and print deltas as they arrive")
	fs.BoolVar(&o.accumulate, "accumulate", false,
		"with -stream, fold the chunks and print the result as a unary reply")
	fs.BoolVar(&o.includeUsage, "include-usage", false,
		"with -stream, ask for the usage chunk; print token usage to stderr")
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	if o.model == "" || o.prompt == "" {
		fmt.Fprintln(stderr, "prisme-chat: -model and -prompt are required")
		fs.Usage()
		return 2
	}
	if o.accumulate && !o.stream {
		fmt.Fprintln(stderr, "prisme-chat: -accumulate needs -stream")
		return 2
	}

	conn := o.connect(stderr, dialOpts)
	if conn == nil {
		return 2
	}
	defer conn.Close()
	ctx, cancel := o.callContext()
	defer cancel()

	client := llmgatewayv1.NewChatCompletionServiceClient(conn)
	req := buildRequest(&o)
	var err error
	if o.stream {
		err = callStream(ctx, client, req, &o, stdout, stderr)
	} else {
		err = callUnary(ctx, client, req, &o, stdout, stderr)
	}
	if err != nil {
		printError(stderr, err)
		return 1
	}
	return 0
}

func outgoingMetadata(o *connFlags) metadata.MD {
	md := metadata.MD{}
	for _, kv := range o.metadata {
		md.Append(kv[0], kv[1])
	}
	return md
}

func buildRequest(o *options) *llmgatewayv1.CreateChatCompletionRequest {
	req := &llmgatewayv1.CreateChatCompletionRequest{
		Model: o.model,
		Messages: []*llmgatewayv1.ChatMessage{
			{Role: "user", ContentText: proto.String(o.prompt)}, // plain text: no structpb.Value needed
		},
	}
	if o.stream && o.includeUsage {
		req.StreamOptions = &llmgatewayv1.StreamOptions{IncludeUsage: proto.Bool(true)}
	}
	return req
}

func callUnary(ctx context.Context, client llmgatewayv1.ChatCompletionServiceClient,
	req *llmgatewayv1.CreateChatCompletionRequest, o *options, stdout, stderr io.Writer) error {
	var header, trailer metadata.MD
	resp, err := client.CreateChatCompletion(ctx, req, grpc.Header(&header), grpc.Trailer(&trailer))
	if o.verbose {
		printMetadata(stderr, "header", header)
		defer printMetadata(stderr, "trailer", trailer)
	}
	if err != nil {
		return err
	}
	return printResponse(resp, o, stdout, stderr)
}

// printResponse prints a unary reply (or a folded stream): protojson, or the text of choice 0 and usage.
func printResponse(resp *llmgatewayv1.CreateChatCompletionResponse, o *options, stdout, stderr io.Writer) error {
	if o.json {
		return printJSON(stdout, resp)
	}
	text := ""
	for _, c := range resp.GetChoices() {
		if c.GetIndex() == 0 {
			text = messageText(c.GetMessage().GetContent(), c.GetMessage().GetRefusal())
			break
		}
	}
	fmt.Fprintln(stdout, text)
	if o.includeUsage && resp.GetUsage() != nil {
		printUsage(stderr, resp.GetUsage())
	}
	return nil
}

func callStream(ctx context.Context, client llmgatewayv1.ChatCompletionServiceClient,
	req *llmgatewayv1.CreateChatCompletionRequest, o *options, stdout, stderr io.Writer) error {
	stream, err := client.StreamChatCompletion(ctx, req)
	if err != nil {
		return err
	}
	if o.verbose {
		// Header blocks until the headers arrive (or the call fails, then it is empty).
		header, _ := stream.Header()
		printMetadata(stderr, "header", header)
		defer func() { printMetadata(stderr, "trailer", stream.Trailer()) }()
	}
	if o.accumulate {
		resp, err := prisme.Accumulate(stream)
		if err != nil {
			return err
		}
		return printResponse(resp, o, stdout, stderr)
	}
	var usage *llmgatewayv1.Usage
	var refusal strings.Builder
	wroteText := false
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if wroteText {
				fmt.Fprintln(stdout) // terminate the partial line
			}
			return err
		}
		if chunk.GetUsage() != nil {
			usage = chunk.GetUsage()
		}
		if o.json {
			if err := printJSON(stdout, chunk); err != nil {
				return err
			}
			continue
		}
		for _, c := range chunk.GetChoices() {
			if c.GetIndex() != 0 {
				continue
			}
			if s := c.GetDelta().GetContent(); s != "" {
				io.WriteString(stdout, s) // os.Stdout is unbuffered: the text shows as it arrives
				wroteText = true
			}
			refusal.WriteString(c.GetDelta().GetRefusal())
		}
	}
	if !o.json {
		if !wroteText && refusal.Len() > 0 {
			io.WriteString(stdout, refusal.String())
		}
		fmt.Fprintln(stdout)
		if o.includeUsage && usage != nil {
			printUsage(stderr, usage)
		}
	}
	return nil
}

// messageText is the content, or the refusal when there is no content.
func messageText(content, refusal string) string {
	if content == "" {
		return refusal
	}
	return content
}

// printJSON writes m as protojson on one line. protojson deliberately varies its whitespace between
// builds, so the output is compacted to be stable.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

func printUsage(w io.Writer, u *llmgatewayv1.Usage) {
	fmt.Fprintf(w, "usage: prompt_tokens=%d completion_tokens=%d total_tokens=%d\n",
		u.GetPromptTokens(), u.GetCompletionTokens(), u.GetTotalTokens())
}

func printMetadata(w io.Writer, kind string, md metadata.MD) {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range md[k] {
			if strings.HasSuffix(k, "-bin") {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			fmt.Fprintf(w, "%s %s: %s\n", kind, k, v)
		}
	}
}

// printError writes "CODE: message", one line per google.rpc detail, and "grpc-status: CODE".
func printError(w io.Writer, err error) {
	st := status.Convert(err)
	name := code.Code(st.Code()).String()
	fmt.Fprintf(w, "%s: %s\n", name, st.Message())
	anys := st.Proto().GetDetails()
	for i, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			fmt.Fprintf(w, "error_info: reason=%s domain=%s metadata={%s}\n",
				d.GetReason(), d.GetDomain(), sortedPairs(d.GetMetadata()))
		case *errdetails.RetryInfo:
			fmt.Fprintf(w, "retry_info: retry_delay=%s\n", formatDuration(d.GetRetryDelay()))
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Fprintf(w, "bad_request: field=%s description=%s\n", v.GetField(), v.GetDescription())
			}
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				fmt.Fprintf(w, "quota_failure: subject=%s description=%s\n", v.GetSubject(), v.GetDescription())
			}
		case *errdetails.PreconditionFailure:
			for _, v := range d.GetViolations() {
				fmt.Fprintf(w, "precondition_failure: type=%s subject=%s description=%s\n",
					v.GetType(), v.GetSubject(), v.GetDescription())
			}
		case *errdetails.RequestInfo:
			fmt.Fprintf(w, "request_info: request_id=%s\n", d.GetRequestId())
		case *errdetails.LocalizedMessage:
			fmt.Fprintf(w, "localized_message: locale=%s message=%s\n", d.GetLocale(), d.GetMessage())
		case *errdetails.Help:
			for _, l := range d.GetLinks() {
				fmt.Fprintf(w, "help: description=%s url=%s\n", l.GetDescription(), l.GetUrl())
			}
		default:
			// An error value (a type this binary does not know) or a known type not listed above.
			typeURL := ""
			if i < len(anys) {
				typeURL = anys[i].GetTypeUrl()
			}
			fmt.Fprintf(w, "detail: type=%s\n", typeURL)
		}
	}
	fmt.Fprintf(w, "grpc-status: %s\n", name)
}

func sortedPairs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// formatDuration writes a duration as seconds with no trailing zeros: "2s", "2.5s", "0.125s".
func formatDuration(d *durationpb.Duration) string {
	s, n := d.GetSeconds(), d.GetNanos()
	if n == 0 {
		return fmt.Sprintf("%ds", s)
	}
	sign := ""
	if s < 0 || n < 0 {
		sign, s, n = "-", -s, -n
	}
	frac := strings.TrimRight(fmt.Sprintf("%09d", n), "0")
	return fmt.Sprintf("%s%d.%ss", sign, s, frac)
}
