// A service in another repository: it requires the Go client module by its release version, resolved
// through a module proxy (tests/release builds a file:// proxy from this repository), never a replace.
module example.com/prisme-consumer

go 1.26.0

require github.com/prismeai/prisme-grpc-bridge/clients/go v0.1.0
