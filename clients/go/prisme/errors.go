package prisme

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// detail returns the first detail of type T in err's google.rpc status, or nil (also for an error
// that is not a gRPC status).
func detail[T any](err error) T {
	var zero T
	st, ok := status.FromError(err)
	if !ok {
		return zero
	}
	for _, d := range st.Details() {
		if t, ok := d.(T); ok {
			return t
		}
	}
	return zero
}

// ErrorInfo returns the ErrorInfo detail of a failed call: Reason (e.g. "UPSTREAM_RATE_LIMITED"), Domain
// and Metadata; nil when there is none.
func ErrorInfo(err error) *errdetails.ErrorInfo {
	return detail[*errdetails.ErrorInfo](err)
}

// Reason is ErrorInfo(err).GetReason(): "" when the call carried no ErrorInfo.
func Reason(err error) string {
	return ErrorInfo(err).GetReason()
}

// RetryDelay returns how long the server asked to wait before retrying (the RetryInfo detail), and
// false when it said nothing.
func RetryDelay(err error) (time.Duration, bool) {
	info := detail[*errdetails.RetryInfo](err)
	if info == nil || info.GetRetryDelay() == nil {
		return 0, false
	}
	return info.GetRetryDelay().AsDuration(), true
}

// FieldViolations returns the BadRequest field violations of a failed call (the request field path and
// what is wrong with it), nil when there are none.
func FieldViolations(err error) []*errdetails.BadRequest_FieldViolation {
	return detail[*errdetails.BadRequest](err).GetFieldViolations()
}
