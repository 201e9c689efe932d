package httpapi_test

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/sockio"
	"github.com/push-appserver/push-appserver/internal/testutil/logcore"
)

// http.max_connections_per_client bounds what one client address holds
// (README, "One client holding connections"), but over the TLS
// listener's HTTP/2 a connection carries many requests at once, each a
// handler that may wait up to ReadTimeout (10 s) for a body that never
// comes: with net/http's default of 250, one client's 128 connections
// held 32,000. A connection's streams beyond MaxStreamsPerConnection are
// refused.
func TestHTTP2StreamsPerConnectionBounded(t *testing.T) {
	cert := testCertificate(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.New(httpapi.Options{Service: logcore.New(t, appserver.Options{}), Logger: slog.New(slog.DiscardHandler)})
	lim := httpapi.NewConnLimit(httpapi.ConnLimitOptions{Slots: 1000, PerClient: httpapi.DefaultMaxConnectionsPerClient})
	srv := httpapi.NewServer(ln.Addr().String(), h, slog.New(slog.DiscardHandler))
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	go srv.ServeTLS(httpapi.LimitListener(sockio.Listener{Listener: ln}, lim), "", "")
	defer srv.Close()

	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	const streams = 300
	for i := range streams {
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/push_appserver/v1/push-batch"}, {"content-length", "65536"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		// Headers, and a body that never comes.
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true})
	}
	// The refusals come at once; the streams taken are answered when
	// their bodies' wait ends, 10 s on.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	refused := 0
	for refused < streams-httpapi.MaxStreamsPerConnection {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%d of %d streams refused (%v): a connection carries more than %d requests at once", refused, streams, err, httpapi.MaxStreamsPerConnection)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
			refused++
		}
	}
}
