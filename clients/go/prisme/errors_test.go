package prisme

import (
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func richError(t *testing.T) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "slow down").WithDetails(
		&durationpb.Duration{Seconds: 1}, // not a google.rpc detail: skipped
		&errdetails.ErrorInfo{Reason: "UPSTREAM_RATE_LIMITED", Domain: "grpc-bridge.prisme.ai", Metadata: map[string]string{"httpStatus": "429"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(2500 * time.Millisecond)},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "model", Description: "required"}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestErrorDetails(t *testing.T) {
	err := richError(t)
	if got := ErrorInfo(err); got.GetReason() != "UPSTREAM_RATE_LIMITED" || got.GetMetadata()["httpStatus"] != "429" {
		t.Errorf("ErrorInfo = %v", got)
	}
	if Reason(err) != "UPSTREAM_RATE_LIMITED" {
		t.Errorf("Reason = %q", Reason(err))
	}
	if d, ok := RetryDelay(err); !ok || d != 2500*time.Millisecond {
		t.Errorf("RetryDelay = %v, %v", d, ok)
	}
	v := FieldViolations(err)
	if len(v) != 1 || v[0].GetField() != "model" || v[0].GetDescription() != "required" {
		t.Errorf("FieldViolations = %v", v)
	}
}

func TestErrorDetailsAbsent(t *testing.T) {
	for _, err := range []error{status.Error(codes.Internal, "boom"), errors.New("not grpc"), nil} {
		if ErrorInfo(err) != nil || Reason(err) != "" || FieldViolations(err) != nil {
			t.Errorf("%v: details found", err)
		}
		if _, ok := RetryDelay(err); ok {
			t.Errorf("%v: retry delay found", err)
		}
	}
}

func TestAccumulateStream(t *testing.T) {
	chunks, expected := loadVector(t, filepath.Join(vectorsDir, "content.json"))
	got, err := Accumulate(&fakeStream{chunks: chunks, err: io.EOF})
	if err != nil || !proto.Equal(got, expected) {
		t.Fatalf("Accumulate = %v, %v", got, err)
	}
	failure := status.Error(codes.Unavailable, "upstream closed the stream early")
	got, err = Accumulate(&fakeStream{chunks: chunks[:4], err: failure})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v", err)
	}
	if text := got.GetChoices()[0].GetMessage().GetContent(); text != "The quick brown" {
		t.Errorf("partial content = %q", text)
	}
}
