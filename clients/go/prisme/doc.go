// Package prisme is what a Go service writes around the generated stubs of
// prisme.llmgateway.v1.ChatCompletionService (package llmgatewayv1) to call the prisme-grpc-bridge:
//
//   - [NewClient]: a connection with keepalive settings the bridge accepts and round_robin load
//     balancing, so a dns:/// target naming a headless Kubernetes Service spreads calls over every pod.
//     The transport security is always explicit: [Plaintext] or [TLS].
//   - [Bearer]: per-RPC bearer credentials (a session JWT or an iak_ key) that refuse to travel over
//     plaintext unless told otherwise.
//   - [Accumulator] and [Accumulate]: fold a StreamChatCompletion stream into the
//     CreateChatCompletionResponse the unary call returns.
//   - [ErrorInfo], [RetryDelay] and [FieldViolations]: read the google.rpc details of a failed call.
//
// The accumulator follows the same rules as the Python and Java clients; clients/testdata/accumulator
// holds the vectors all three pass.
package prisme
