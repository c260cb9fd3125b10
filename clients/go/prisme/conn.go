package prisme

import (
	"crypto/tls"
	"time"

	"google.golang.org/grpc"
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
