package prisme

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/credentials"
)

// Bearer is a bearer token (a session JWT or an iak_ key) sent as "authorization: Bearer TOKEN" metadata.
// It implements credentials.PerRPCCredentials: pass it to the connection with
// grpc.WithPerRPCCredentials(b), or to each call with grpc.PerRPCCredentials(b); not both, since gRPC
// would send both tokens.
//
// A token is a secret, so by default it requires transport security: over a [Plaintext] connection,
// grpc.NewClient refuses a connection-level Bearer and a call with a per-call Bearer fails with
// UNAUTHENTICATED before anything is sent. [Bearer.AllowingPlaintext] lifts that for trusted networks.
// String never shows the token.
type Bearer struct {
	token          string
	allowPlaintext bool
}

var _ credentials.PerRPCCredentials = Bearer{}

// NewBearer returns credentials for token, which must be non-empty and on one line.
func NewBearer(token string) (Bearer, error) {
	if token == "" || strings.ContainsAny(token, "\r\n") {
		return Bearer{}, errors.New("prisme: a bearer token must be non-empty and on one line")
	}
	return Bearer{token: token}, nil
}

// AllowingPlaintext returns a copy that may also be sent over plaintext connections: loopback, a
// sidecar, or a service mesh that encrypts.
func (b Bearer) AllowingPlaintext() Bearer {
	b.allowPlaintext = true
	return b
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b.token == "" {
		return nil, errors.New("prisme: empty bearer token (use NewBearer)")
	}
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b Bearer) RequireTransportSecurity() bool {
	return !b.allowPlaintext
}

// String describes the credentials without the token.
func (b Bearer) String() string {
	if b.allowPlaintext {
		return "Bearer(***, plaintext allowed)"
	}
	return "Bearer(***)"
}
