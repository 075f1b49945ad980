// A kubelet stand-in on Go's own HTTP/2 server (the one kubelets run), for the scrape client's
// compatibility test. Serves /metrics/resource over TLS on two loopback listeners: "steady" keeps
// idle connections, "idle" closes them (GOAWAY) after a short idle timeout. Prints
// "steady=ADDR idle=ADDR" on stdout once both listen, and exits when stdin closes.
//
// Usage: go run . CERT_PEM KEY_PEM IDLE_TIMEOUT_MS
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// body is the n-th answer: Prometheus text long enough for several DATA frames.
func body(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# answer %d\n", n)
	for i := 0; b.Len() < 60000; i++ {
		fmt.Fprintf(&b, "container_cpu_usage_seconds_total{container=\"c%d\",namespace=\"ns\",pod=\"p%d\"} %d.5 1633253812125\n", i, n, i)
	}
	return b.String()
}

func serve(listener net.Listener, cert, key string, idle time.Duration) {
	count := 0
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics/resource" || r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2 GET /metrics/resource", http.StatusBadRequest)
			return
		}
		if r.Header.Get("Authorization") != "Bearer sa-token" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		text := body(count)
		count++
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		// Every other answer declares its length; the rest are streamed in two flushes.
		if count%2 == 0 {
			w.Header().Set("Content-Length", strconv.Itoa(len(text)))
			io.WriteString(w, text)
			return
		}
		io.WriteString(w, text[:len(text)/2])
		w.(http.Flusher).Flush()
		io.WriteString(w, text[len(text)/2:])
	})
	server := &http.Server{Handler: handler, IdleTimeout: idle}
	server.ServeTLS(listener, cert, key)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: go_kubelet CERT_PEM KEY_PEM IDLE_TIMEOUT_MS")
		os.Exit(2)
	}
	idleMs, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	steady, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	idle, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go serve(steady, os.Args[1], os.Args[2], time.Minute)
	go serve(idle, os.Args[1], os.Args[2], time.Duration(idleMs)*time.Millisecond)
	fmt.Printf("steady=%s idle=%s\n", steady.Addr(), idle.Addr())
	// Ends with the test: its stdin pipe closes when the test drops the child.
	io.Copy(io.Discard, os.Stdin)
}
