package webpush

import (
	"net/http"
	"time"
)

// SetPings times the HTTP/2 health check of b's connections; call it
// before b's first push, when the transport reads it.
func SetPings(b *Backend, after, timeout time.Duration) {
	h := b.client.Transport.(*http.Transport).HTTP2
	h.SendPingTimeout, h.PingTimeout = after, timeout
}
