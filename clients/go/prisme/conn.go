package prisme

import (
	"crypto/tls"
	"encoding/json"
	"strconv"
	"time"

	"google.golang.org/grpc"
	// Registers weighted_round_robin (gRFC A58), which WeightedRoundRobin selects.
	_ "google.golang.org/grpc/balancer/weightedroundrobin"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	llmgatewayv1 "github.com/prismeai/prisme-grpc-bridge/clients/go/gen/prisme/llmgateway/v1"
)

// Keepalive settings. The bridge accepts a client ping every 10 s, also while no call is running, and
// never answers pings with GOAWAY too_many_pings within that policy. 30 s keeps a margin and still notices
// a dead peer, or a connection silently dropped by a NAT or load balancer, within KeepaliveTime plus
// KeepaliveTimeout.
const (
	KeepaliveTime    = 30 * time.Second
	KeepaliveTimeout = 10 * time.Second
)

// MaxMessageBytes is the largest message sent or received: requests can carry images as data: URLs,
// and the bridge accepts 64 MiB both ways.
const MaxMessageBytes = 64 << 20

// ServiceConfig selects round_robin: a dns:/// target naming a headless Service resolves to every pod,
// and round_robin keeps a connection to each and spreads the calls, where the default pick_first would
// send everything to one pod.
const ServiceConfig = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// WeightedRoundRobinConfig tunes weighted_round_robin; a zero field keeps grpc-go's default.
type WeightedRoundRobinConfig struct {
	// BlackoutPeriod: how long a pod must have reported before its weight is used (default 10 s).
	BlackoutPeriod time.Duration
	// WeightUpdatePeriod: how often weights are recomputed (default 1 s, at least 100 ms).
	WeightUpdatePeriod time.Duration
	// WeightExpirationPeriod: a pod whose last report is older goes back to the mean weight (default 3 min).
	WeightExpirationPeriod time.Duration
	// ErrorUtilizationPenalty weighs the pod's error rate against its utilization (default 1.0).
	ErrorUtilizationPenalty float64
	// EnableOOBLoadReport reads the out-of-band OpenRcaService stream instead of each call's trailer,
	// one report every OOBReportingPeriod (default 10 s; the bridge sends at most one per
	// --orca-min-interval).
	EnableOOBLoadReport bool
	OOBReportingPeriod  time.Duration
}

// WeightedRoundRobinServiceConfig is the service config that selects weighted_round_robin with cfg,
// falling back to round_robin for a client without it.
func WeightedRoundRobinServiceConfig(cfg WeightedRoundRobinConfig) string {
	policy := map[string]any{}
	for name, d := range map[string]time.Duration{
		"blackoutPeriod":         cfg.BlackoutPeriod,
		"weightUpdatePeriod":     cfg.WeightUpdatePeriod,
		"weightExpirationPeriod": cfg.WeightExpirationPeriod,
		"oobReportingPeriod":     cfg.OOBReportingPeriod,
	} {
		if d > 0 {
			policy[name] = strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" // google.protobuf.Duration JSON
		}
	}
	if cfg.ErrorUtilizationPenalty > 0 {
		policy["errorUtilizationPenalty"] = cfg.ErrorUtilizationPenalty
	}
	if cfg.EnableOOBLoadReport {
		policy["enableOobLoadReport"] = true
	}
	config, err := json.Marshal(map[string]any{
		"loadBalancingConfig": []any{map[string]any{"weighted_round_robin": policy}, map[string]any{"round_robin": map[string]any{}}},
	})
	if err != nil {
		panic(err) // maps of strings, numbers and booleans always marshal
	}
	return string(config)
}

// WeightedRoundRobin makes NewClient balance calls by the load each bridge pod reports (ORCA: the
// bridge's --orca, on by default) instead of plain round_robin: a pod holding many long streams, or
// near its --max-concurrent-rpcs, gets fewer new calls. Give it after NewClient's security argument:
//
//	conn, err := prisme.NewClient(target, prisme.TLS(nil), prisme.WeightedRoundRobin(prisme.WeightedRoundRobinConfig{}))
func WeightedRoundRobin(cfg WeightedRoundRobinConfig) grpc.DialOption {
	return grpc.WithDefaultServiceConfig(WeightedRoundRobinServiceConfig(cfg))
}

// KeepaliveParams are the client keepalive parameters used by NewClient.
func KeepaliveParams() keepalive.ClientParameters {
	return keepalive.ClientParameters{
		Time:                KeepaliveTime,
		Timeout:             KeepaliveTimeout,
		PermitWithoutStream: true,
	}
}

// Plaintext is h2c without TLS: for loopback, a sidecar, or a service mesh that encrypts for you.
// A [Bearer] token is not sent over it unless the Bearer allows plaintext.
func Plaintext() credentials.TransportCredentials {
	return insecure.NewCredentials()
}

// TLS uses cfg, or the system roots with at least TLS 1.2 when cfg is nil.
func TLS(cfg *tls.Config) credentials.TransportCredentials {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return credentials.NewTLS(cfg)
}

// DialOptions are the options NewClient applies before its caller's: transport security, keepalive,
// the round_robin service config and the message size limits.
func DialOptions(security credentials.TransportCredentials) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(security),
		grpc.WithKeepaliveParams(KeepaliveParams()),
		grpc.WithDefaultServiceConfig(ServiceConfig),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
	}
}

// NewClient opens a connection to the bridge at target ("host:port", or
// "dns:///prisme-bridge.ai.svc.cluster.local:50051" for a headless Service) with DialOptions(security)
// followed by opts (which may override them, e.g. grpc.WithPerRPCCredentials). Like grpc.NewClient it
// does not connect until the first call. Close the connection when done.
func NewClient(target string, security credentials.TransportCredentials, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(target, append(DialOptions(security), opts...)...)
}

// NewChatClient is NewClient plus the generated stub. The connection is returned to be closed.
func NewChatClient(target string, security credentials.TransportCredentials, opts ...grpc.DialOption) (llmgatewayv1.ChatCompletionServiceClient, *grpc.ClientConn, error) {
	conn, err := NewClient(target, security, opts...)
	if err != nil {
		return nil, nil, err
	}
	return llmgatewayv1.NewChatCompletionServiceClient(conn), conn, nil
}
