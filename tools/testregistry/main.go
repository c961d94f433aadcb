// Command testregistry serves an in-memory OCI registry with the OCI 1.1 referrers API,
// so tests can exercise how cosign v3 finds signature bundles on registries that have it
// (Debian's docker-registry, distribution 2.8, does not: it covers the tag fallback).
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	// The first stdout line tells the caller where we listen (the port may be random).
	fmt.Fprintf(os.Stdout, "listening on %s\n", listener.Addr())
	handler := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(os.Stderr, "", log.LstdFlags)))
	log.Fatal(http.Serve(listener, handler))
}
