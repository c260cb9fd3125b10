package prisme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
)

// bridgeMinPingInterval is the bridge's server policy (bridge/server.py): pings at most every 10 s.
const bridgeMinPingInterval = 10 * time.Second

// recorder answers with its name as the model and records each call's authorization metadata.
type recorder struct {
	llmgatewayv1.UnimplementedChatCompletionServiceServer
	name string

	mu    sync.Mutex
	auths [][]string
}

func (r *recorder) CreateChatCompletion(ctx context.Context, _ *llmgatewayv1.CreateChatCompletionRequest) (*llmgatewayv1.CreateChatCompletionResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	// Asked once, the server's ORCA option (if any) reports the server's load in the call's trailer.
	_ = orca.CallMetricsRecorderFromContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auths = append(r.auths, md.Get("authorization"))
	return &llmgatewayv1.CreateChatCompletionResponse{Model: r.name}, nil
}

func (r *recorder) calls() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string(nil), r.auths...)
}

// servers serves one recorder per name on in-memory listeners; the dial option routes an address
// (a name) to its listener.
func servers(t *testing.T, security credentials.TransportCredentials, names ...string) (map[string]*recorder, grpc.DialOption) {
	t.Helper()
	return serversWith(t, func(string) []grpc.ServerOption {
		if security != nil {
			return []grpc.ServerOption{grpc.Creds(security)}
		}
		return nil
	}, names...)
}

// serversWith is servers with each server's options given by optionsOf(name).
func serversWith(t *testing.T, optionsOf func(name string) []grpc.ServerOption, names ...string) (map[string]*recorder, grpc.DialOption) {
	t.Helper()
	recorders := map[string]*recorder{}
	listeners := map[string]*bufconn.Listener{}
	for _, name := range names {
		lis := bufconn.Listen(1 << 20)
		srv := grpc.NewServer(optionsOf(name)...)
		recorders[name] = &recorder{name: name}
		llmgatewayv1.RegisterChatCompletionServiceServer(srv, recorders[name])
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		listeners[name] = lis
	}
	dial := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		host, _, _ := strings.Cut(addr, ":")
		return listeners[host].DialContext(ctx)
	})
	return recorders, dial
}

// staticResolver resolves "test:///bridge" to the given addresses, as DNS does a headless Service.
func staticResolver(addrs ...string) *manual.Resolver {
	r := manual.NewBuilderWithScheme("test")
	state := resolver.State{}
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	return r
}

func call(t *testing.T, client llmgatewayv1.ChatCompletionServiceClient, opts ...grpc.CallOption) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.CreateChatCompletion(ctx, &llmgatewayv1.CreateChatCompletionRequest{Model: "m"}, opts...)
	return resp.GetModel(), err
}

func TestKeepaliveWithinTheBridgePolicy(t *testing.T) {
	p := KeepaliveParams()
	if p.Time < bridgeMinPingInterval || p.Timeout <= 0 || !p.PermitWithoutStream {
		t.Errorf("KeepaliveParams = %+v: the bridge accepts pings every %v at most, also between calls", p, bridgeMinPingInterval)
	}
}

func TestCallsSpreadOverEveryAddress(t *testing.T) {
	for _, c := range []struct {
		name    string
		extra   []grpc.DialOption
		servers int
	}{
		{"round_robin", nil, 2},
		{"caller overrides to pick_first", []grpc.DialOption{grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"pick_first": {}}]}`)}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, dial := servers(t, nil, "a", "b")
			opts := append([]grpc.DialOption{grpc.WithResolvers(staticResolver("a:1", "b:1")), dial}, c.extra...)
			client, conn, err := NewChatClient("test:///bridge", Plaintext(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// Calls until both answered, at most 200 over about 2 s: round_robin uses a pod once its
			// connection is ready; pick_first never leaves the first.
			seen := map[string]bool{}
			for i := 0; i < 200 && len(seen) < 2; i++ {
				if i > 0 {
					time.Sleep(10 * time.Millisecond)
				}
				model, err := call(t, client)
				if err != nil {
					t.Fatal(err)
				}
				seen[model] = true
			}
			if len(seen) != c.servers {
				t.Errorf("answered by %v, want %d servers", seen, c.servers)
			}
		})
	}
}

func TestWeightedRoundRobinServiceConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  WeightedRoundRobinConfig
		want string
	}{
		{WeightedRoundRobinConfig{}, `{"loadBalancingConfig":[{"weighted_round_robin":{}},{"round_robin":{}}]}`},
		{
			WeightedRoundRobinConfig{BlackoutPeriod: time.Second, WeightUpdatePeriod: 100 * time.Millisecond, ErrorUtilizationPenalty: 2, EnableOOBLoadReport: true, OOBReportingPeriod: 5 * time.Second},
			`{"loadBalancingConfig":[{"weighted_round_robin":{"blackoutPeriod":"1s","enableOobLoadReport":true,"errorUtilizationPenalty":2,"oobReportingPeriod":"5s","weightUpdatePeriod":"0.1s"}},{"round_robin":{}}]}`,
		},
	} {
		if got := WeightedRoundRobinServiceConfig(c.cfg); got != c.want {
			t.Errorf("WeightedRoundRobinServiceConfig(%+v) =\n%s\nwant\n%s", c.cfg, got, c.want)
		}
	}
}

// TestWeightedRoundRobinFollowsReportedLoad: two servers report their load per call (grpc-go's own ORCA
// server side here; tests/interop/test_orca_balancing.py does it with the bridge): the one that says it is busy
// gets few calls once the weights apply.
func TestWeightedRoundRobinFollowsReportedLoad(t *testing.T) {
	utilization := map[string]float64{"busy": 0.9, "idle": 0.05}
	_, dial := serversWith(t, func(name string) []grpc.ServerOption {
		metrics := orca.NewServerMetricsRecorder()
		metrics.SetApplicationUtilization(utilization[name])
		metrics.SetQPS(10)
		return []grpc.ServerOption{orca.CallMetricsServerOption(metrics)}
	}, "busy", "idle")
	wrr := WeightedRoundRobin(WeightedRoundRobinConfig{BlackoutPeriod: 10 * time.Millisecond, WeightUpdatePeriod: 100 * time.Millisecond})
	client, conn, err := NewChatClient("test:///bridge", Plaintext(), grpc.WithResolvers(staticResolver("busy:1", "idle:1")), dial, wrr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Until the weights apply (both reported, past the blackout, recomputed), calls go round robin.
	count := map[string]int{}
	for settle := time.Now().Add(time.Second); time.Now().Before(settle); {
		if _, err := call(t, client); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i++ {
		model, err := call(t, client)
		if err != nil {
			t.Fatal(err)
		}
		count[model]++
	}
	t.Logf("calls per server: %v", count)
	// Weights 10/0.05 against 10/0.9: 18 to 1, so about 95 % of the calls; 70 % leaves room.
	if count["idle"] < 140 {
		t.Errorf("calls per server %v: want most on the idle one", count)
	}
}

func TestBearerRefusesPlaintextUnlessAllowed(t *testing.T) {
	recorders, dial := servers(t, nil, "a")
	bearer, err := NewBearer("iak_secret")
	if err != nil {
		t.Fatal(err)
	}
	client, conn, err := NewChatClient("passthrough:///a", Plaintext(), dial)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	if _, err := call(t, client, grpc.PerRPCCredentials(bearer)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("per-call Bearer over plaintext: err = %v, want UNAUTHENTICATED", err)
	}
	if n := len(recorders["a"].calls()); n != 0 {
		t.Fatalf("the server received %d calls", n)
	}
	if _, err := call(t, client, grpc.PerRPCCredentials(bearer.AllowingPlaintext())); err != nil {
		t.Fatal(err)
	}
	if got := recorders["a"].calls(); len(got) != 1 || len(got[0]) != 1 || got[0][0] != "Bearer iak_secret" {
		t.Errorf("authorization = %q", got)
	}
	if _, err := NewClient("passthrough:///a", Plaintext(), grpc.WithPerRPCCredentials(bearer)); err == nil {
		t.Error("a connection-level Bearer over plaintext was accepted")
	}
}

func TestBearerOverTLS(t *testing.T) {
	serverTLS, clientTLS := selfSignedTLS(t, "bridge.test")
	recorders, dial := servers(t, credentials.NewTLS(serverTLS), "a")
	bearer, _ := NewBearer("jwt-token")
	client, conn, err := NewChatClient("passthrough:///a", TLS(clientTLS), dial, grpc.WithPerRPCCredentials(bearer))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := call(t, client); err != nil {
		t.Fatal(err)
	}
	if got := recorders["a"].calls(); len(got) != 1 || got[0][0] != "Bearer jwt-token" {
		t.Errorf("authorization = %q", got)
	}
}

func TestBearerHidesTheToken(t *testing.T) {
	b, _ := NewBearer("iak_secret")
	for _, s := range []string{b.String(), b.AllowingPlaintext().String()} {
		if strings.Contains(s, "iak_secret") {
			t.Errorf("String() = %q shows the token", s)
		}
	}
	for _, bad := range []string{"", "a\nb"} {
		if _, err := NewBearer(bad); err == nil {
			t.Errorf("NewBearer(%q) accepted", bad)
		}
	}
	if _, err := (Bearer{}).GetRequestMetadata(context.Background()); err == nil {
		t.Error("the zero Bearer sent credentials")
	}
}

// selfSignedTLS returns server and client TLS configs for a fresh self-signed certificate of name.
func selfSignedTLS(t *testing.T, name string) (*tls.Config, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	client := &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12}
	return server, client
}
