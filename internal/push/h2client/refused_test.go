package h2client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/push-appserver/push-appserver/internal/push/h2client"
)

// TestResendsRefusedStream: a stream the service resets with
// REFUSED_STREAM was not processed (RFC 9113 8.7), so the client sends
// the request again by itself, and its caller gets the service's answer
// rather than an error that a push failed.
func TestResendsRefusedStream(t *testing.T) {
	var requests, answered atomic.Int32
	url, ca := rawServer(t, func(c *tls.Conn, fr *http2.Framer) {
		fr.WriteSettings()
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			var id uint32
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
				continue
			case *http2.HeadersFrame:
				if !f.StreamEnded() {
					continue
				}
				id = f.StreamID
			case *http2.DataFrame:
				if !f.StreamEnded() {
					continue
				}
				id = f.StreamID
			default:
				continue
			}
			if requests.Add(1) == 1 {
				fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
				continue
			}
			answered.Add(1) // before the answer, which ends the client's wait
			block.Reset()
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			enc.WriteField(hpack.HeaderField{Name: "apns-id", Value: "1"})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
		}
	})
	c := newClient(t, h2client.Options{CAPath: ca})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := do(ctx, c, url, 0); err != nil {
		t.Fatalf("a request the service refused unprocessed, then took: %v", err)
	}
	if r, a := requests.Load(), answered.Load(); r != 2 || a != 1 {
		t.Fatalf("%d requests reached the service, %d answered: want the refused one sent again, 2 and 1", r, a)
	}
}
