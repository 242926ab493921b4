// Package api holds what berthd and its clients share beyond the protobuf
// messages in proto/: the gRPC metadata keys they exchange. (The
// namespace header, older, is metadata/namespaces.GRPCHeader.)
package api

// StartedHeader is the Attach response header ("true") by which berthd
// says it started the process, as berth.v1.AttachOpen.start asked. A
// client that asked and does not see it calls StartTask itself.
const StartedHeader = "berth-started"

// ContainerIDHeader is the Attach response header that carries the ID of
// the container berthd created, as berth.v1.AttachOpen.create_container
// asked.
const ContainerIDHeader = "berth-container-id"
