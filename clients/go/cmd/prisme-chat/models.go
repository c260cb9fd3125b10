package main

// The subcommands for the other services of the bridge:
//
//	prisme-chat models [-page-size N] [-type T] [-search S] [-brand B] [-capability C] [-tags a,b]
//	                   [-model-ids a,b] [-visible-only] [-enabled true|false] [common flags]
//	prisme-chat embed -model M -input TEXT [-input TEXT ...] [-dimensions N] [-encoding-format base64]
//	                  [-user U] [common flags]
//
// Output contract (the Java client prints the same):
//   - models: every page of ModelService.ListModels (following next_page_token), one line per model on
//     stdout, "MODEL_ID<TAB>TYPE"; with -json each ListModelsResponse page as one protojson line.
//   - embed: one line per input on stdout, "embedding INDEX: N dimensions", and
//     "usage: prompt_tokens=N total_tokens=N" on stderr; with -json the CreateEmbeddingResponse as one
//     protojson line (the vectors as JSON numbers).
//   - errors and bad flags as for chat: exit status 1 after "CODE: message" and the details, 2.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
)

// csvFlag is a comma-separated list flag (-tags eu,fast).
type csvFlag []string

func (f *csvFlag) String() string { return strings.Join(*f, ",") }

func (f *csvFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*f = append(*f, part)
		}
	}
	return nil
}

// listFlag collects a repeatable flag (-input a -input b).
type listFlag []string

func (f *listFlag) String() string { return strings.Join(*f, "\n") }

func (f *listFlag) Set(s string) error {
	*f = append(*f, s)
	return nil
}

// call runs one RPC with the command's deadline and metadata, printing its metadata with -v.
func call(c *connFlags, stderr io.Writer, rpc func(context.Context, ...grpc.CallOption) error) error {
	ctx, cancel := c.callContext()
	defer cancel()
	var header, trailer metadata.MD
	err := rpc(ctx, grpc.Header(&header), grpc.Trailer(&trailer))
	if c.verbose {
		printMetadata(stderr, "header", header)
		printMetadata(stderr, "trailer", trailer)
	}
	return err
}

func runModels(args []string, stdout, stderr io.Writer, dialOpts []grpc.DialOption) int {
	var c connFlags
	var modelIDs, tags csvFlag
	var enabled string
	req := &llmgatewayv1.ListModelsRequest{}
	fs := flag.NewFlagSet("prisme-chat models", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	pageSize := fs.Int("page-size", 0, "models per call (0 = the gateway's default, 100; above 100 is capped)")
	fs.StringVar(&req.Type, "type", "", "only this type: completion, embeddings or image_generation")
	fs.StringVar(&req.Search, "search", "", "case-insensitive search in model id, name and brand")
	fs.StringVar(&req.Brand, "brand", "", "only this brand (exact)")
	fs.StringVar(&req.Capability, "capability", "", "only models with this capability: vision, audio, text, image")
	fs.Var(&tags, "tags", "only models with any of these tags (comma-separated)")
	fs.Var(&modelIDs, "model-ids", "only these model ids (comma-separated)")
	fs.BoolVar(&req.VisibleOnly, "visible-only", false, "leave out hidden models")
	fs.StringVar(&enabled, "enabled", "", "true: only enabled models, false: only disabled ones")
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	switch enabled {
	case "":
	case "true", "false":
		req.Enabled = proto.Bool(enabled == "true")
	default:
		fmt.Fprintf(stderr, "prisme-chat: -enabled wants true or false, got %q\n", enabled)
		return 2
	}
	if *pageSize < 0 {
		fmt.Fprintln(stderr, "prisme-chat: -page-size must not be negative")
		return 2
	}
	req.PageSize, req.ModelIds, req.Tags = int32(*pageSize), modelIDs, tags

	conn := c.connect(stderr, dialOpts)
	if conn == nil {
		return 2
	}
	defer conn.Close()
	client := llmgatewayv1.NewModelServiceClient(conn)
	for {
		var page *llmgatewayv1.ListModelsResponse
		err := call(&c, stderr, func(ctx context.Context, opts ...grpc.CallOption) (err error) {
			page, err = client.ListModels(ctx, req, opts...)
			return err
		})
		if err == nil {
			err = printModels(stdout, page, c.json)
		}
		if err != nil {
			printError(stderr, err)
			return 1
		}
		if page.GetNextPageToken() == "" {
			return 0
		}
		req.PageToken = page.GetNextPageToken()
	}
}

func printModels(w io.Writer, page *llmgatewayv1.ListModelsResponse, json bool) error {
	if json {
		return printJSON(w, page)
	}
	for _, m := range page.GetModels() {
		fmt.Fprintf(w, "%s\t%s\n", m.GetModelId(), m.GetType())
	}
	return nil
}

func runEmbed(args []string, stdout, stderr io.Writer, dialOpts []grpc.DialOption) int {
	var c connFlags
	var inputs listFlag
	req := &llmgatewayv1.CreateEmbeddingRequest{}
	fs := flag.NewFlagSet("prisme-chat embed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	fs.StringVar(&req.Model, "model", "", "embeddings model id (required)")
	fs.Var(&inputs, "input", "a text to embed (repeatable; at least one)")
	dimensions := fs.Int("dimensions", 0, "output dimensionality (0 = the model's default)")
	fs.StringVar(&req.EncodingFormat, "encoding-format", "", "float or base64 on the upstream's wire (the output is floats)")
	fs.StringVar(&req.User, "user", "", "end-user id sent upstream")
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	if req.Model == "" || len(inputs) == 0 {
		fmt.Fprintln(stderr, "prisme-chat: embed needs -model and at least one -input")
		return 2
	}
	if *dimensions < 0 {
		fmt.Fprintln(stderr, "prisme-chat: -dimensions must not be negative")
		return 2
	}
	if *dimensions > 0 {
		req.Dimensions = proto.Int32(int32(*dimensions))
	}
	req.Input = inputs

	conn := c.connect(stderr, dialOpts)
	if conn == nil {
		return 2
	}
	defer conn.Close()
	client := llmgatewayv1.NewEmbeddingServiceClient(conn)
	var resp *llmgatewayv1.CreateEmbeddingResponse
	err := call(&c, stderr, func(ctx context.Context, opts ...grpc.CallOption) (err error) {
		resp, err = client.CreateEmbedding(ctx, req, opts...)
		return err
	})
	if err == nil && c.json {
		err = printJSON(stdout, resp)
	}
	if err != nil {
		printError(stderr, err)
		return 1
	}
	if !c.json {
		for _, e := range resp.GetData() {
			fmt.Fprintf(stdout, "embedding %d: %d dimensions\n", e.GetIndex(), len(e.GetEmbedding()))
		}
		u := resp.GetUsage()
		fmt.Fprintf(stderr, "usage: prompt_tokens=%d total_tokens=%d\n", u.GetPromptTokens(), u.GetTotalTokens())
	}
	return 0
}
