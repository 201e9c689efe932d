package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
)

// failing is a Service whose registrations and unregistrations all fail
// with err.
type failing struct{ err error }

func (f failing) Register(context.Context, appserver.Caller, string, string, string) (registry.Registration, error) {
	return registry.Registration{}, f.err
}

func (f failing) Unregister(context.Context, appserver.Caller, string, string) (registry.Registration, error) {
	return registry.Registration{}, f.err
}

func (f failing) Push(context.Context, appserver.PushRequest) error { return f.err }

// serveOnce sends one form-encoded POST to h under ctx and returns the
// answer's status and body.
func serveOnce(ctx context.Context, h http.Handler, path, body string) (int, string) {
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.String()
}

// A registration or unregistration the registry failed (a full disk, a
// database down) is answered as mod_push_appserver answered it, and
// logged at error naming the endpoint, so that an operator sees devices
// failing to register; one whose client hung up is nobody's failure and
// logs no error.
func TestRegistryFailuresLogged(t *testing.T) {
	for _, endpoint := range []string{"register", "unregister"} {
		for _, tc := range []struct {
			name    string
			err     error
			hungUp  bool
			wantLog bool
		}{
			{"registry failed", errors.New("disk I/O error"), false, true},
			{"client hung up", fmt.Errorf("storing registration: %w", context.Canceled), true, false},
		} {
			t.Run(endpoint+", "+tc.name, func(t *testing.T) {
				var buf logbuf.Buffer
				logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
				h := httpapi.New(httpapi.Options{Service: failing{tc.err}, Logger: logger})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tc.hungUp {
					cancel()
				}
				status, body := serveOnce(ctx, h, "/push_appserver/v1/"+endpoint, "type=fcm&node=n1&token=t1")
				if status != http.StatusOK || body != "ERROR\nInternal server error!" {
					t.Errorf("answer %d %q, want 200 %q", status, body, "ERROR\nInternal server error!")
				}
				logged := strings.Contains(buf.String(), "level=ERROR") &&
					strings.Contains(buf.String(), "endpoint="+endpoint) && strings.Contains(buf.String(), "disk I/O error")
				if logged != tc.wantLog {
					t.Errorf("failure logged at error: %v, want %v; log: %s", logged, tc.wantLog, buf.String())
				}
				if !tc.wantLog && strings.Contains(buf.String(), "level=ERROR") {
					t.Errorf("a client that hung up logged as an internal error: %s", buf.String())
				}
			})
		}
	}
}

// An error answer is two lines, ERROR and one line saying why, whatever
// the error's text holds: clients (Monal, yaxim) read the answer line by
// line, and a third line would be taken for a node or secret.
func TestErrorAnswersAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		err        error
		status     int
		want       string
	}{
		{"register refused", "register", fmt.Errorf("%w: the node is registered by another account\nnode n1", appserver.ErrForbidden),
			http.StatusForbidden, "ERROR\nnot allowed to change this registration: the node is registered by another account"},
		{"register bad", "register", fmt.Errorf("%w: type too long\nmore", appserver.ErrBadRequest),
			http.StatusBadRequest, "ERROR\nbad request: type too long"},
		{"register invalid token", "register", fmt.Errorf("%w: not hex\nmore", appserver.ErrInvalidToken),
			http.StatusOK, "ERROR\ninvalid push token: not hex"},
		{"unregister refused", "unregister", fmt.Errorf("%w\nnode n1", appserver.ErrForbidden),
			http.StatusForbidden, "ERROR\nnot allowed to change this registration"},
		{"unregister bad", "unregister", fmt.Errorf("%w: node too long\nmore", appserver.ErrBadRequest),
			http.StatusBadRequest, "ERROR\nbad request: node too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := httpapi.New(httpapi.Options{Service: failing{tc.err}})
			status, body := serveOnce(context.Background(), h, "/push_appserver/v1/"+tc.path, "type=fcm&node=n1&token=t1")
			if status != tc.status || body != tc.want {
				t.Errorf("answer %d %q, want %d %q", status, body, tc.status, tc.want)
			}
		})
	}
}

// A part that answers reads but refuses writes (a registry on a
// PostgreSQL standby) is shown as read-only on the health page, not as
// down, which an operator's check that greps for "down" would page
// about; and it leaves the instance ready, since pushes go on.
func TestReadOnlyPartIsNotDown(t *testing.T) {
	h := httpapi.New(httpapi.Options{
		Service: failing{errors.New("unused")},
		Checks: func() []httpapi.Check {
			return []httpapi.Check{{Name: "registry", OK: func() bool { return false }, ReadOnly: func() bool { return true }}}
		},
	})
	get := func(path string) (int, string) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code, w.Body.String()
	}
	if status, body := get("/push_appserver/v1/health"); status != http.StatusOK || body != "RUNNING\nregistry: read-only\n" {
		t.Errorf("health = %d %q, want 200 %q", status, body, "RUNNING\nregistry: read-only\n")
	}
	if status, body := get("/push_appserver/v1/ready"); status != http.StatusOK || body != "READY\n" {
		t.Errorf("ready = %d %q, want 200 READY", status, body)
	}
}
