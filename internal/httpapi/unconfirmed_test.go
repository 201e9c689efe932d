package httpapi_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/httpapi"
	"github.com/push-appserver/push-appserver/internal/metrics"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/postgres"
	"github.com/push-appserver/push-appserver/internal/testutil/logbuf"
	"github.com/push-appserver/push-appserver/internal/testutil/pgtest"
)

var pg = pgtest.New()

func TestMain(m *testing.M) { os.Exit(pg.Run(m)) }

// liveFeed passes the store's change feed to the core and tells the test
// whether it listens.
type liveFeed struct {
	*postgres.Store
	live chan bool
}

func (f *liveFeed) Follow(ctx context.Context, changed func(string), live func(bool)) error {
	return f.Store.Follow(ctx, changed, func(l bool) { live(l); f.live <- l })
}

// A registration or unregistration that PostgreSQL stored but that the
// other instances did not confirm before this instance's feed went down
// is answered ERROR, so that the client tries again; its next try finds
// it stored: the registration is answered with the secret stored, the
// unregistration with the node gone. The log says so at warn without the
// node, and the metrics count it.
func TestUnconfirmedChangeAnsweredError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := pg.DB(t)
	// Acks that do not come would hold a write for a minute: within the
	// test, only the feed's end releases it.
	store, err := postgres.Open(ctx, dsn, postgres.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var log logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil)) // info and above
	m := metrics.New()
	feed := &liveFeed{Store: store, live: make(chan bool, 16)}
	svc, err := appserver.New(store, []appserver.App{{Name: "fcm", Priority: push.PriorityHigh, Backend: &recorder{}}},
		appserver.Options{Changes: feed, Observer: m, CacheTTL: time.Hour}, logger)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	srv := httptest.NewServer(httpapi.New(httpapi.Options{Service: svc, Registrations: store, Metrics: m.Handler(), Logger: logger}))
	defer srv.Close()
	post := func(t *testing.T, path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	listening := false
	waitLive := func(t *testing.T) {
		t.Helper()
		for {
			select {
			case listening = <-feed.live:
				continue
			default:
			}
			if listening {
				return
			}
			select {
			case listening = <-feed.live:
			case <-time.After(30 * time.Second):
				t.Fatal("the feed never listened")
			}
		}
	}
	// Another instance that never confirms: the writes wait for it until
	// the feed goes down, which ending this instance's LISTEN connection
	// once the write is committed brings about.
	hung := pgtest.Listen(t, dsn, "push-appserver-listen", postgres.Channel)
	const node = "n-7f3a"
	cutShort := func(t *testing.T, path, body string) {
		t.Helper()
		waitLive(t)
		type answer struct {
			code int
			body string
		}
		got := make(chan answer, 1)
		go func() {
			resp, err := http.Post(srv.URL+path, "application/x-www-form-urlencoded", strings.NewReader(body))
			if err != nil {
				got <- answer{body: err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got <- answer{resp.StatusCode, string(b)}
		}()
		hung.Heard(t, " "+node)
		if hung.EndOthers(t, "push-appserver-listen") == 0 {
			t.Fatal("no LISTEN connection to end")
		}
		select {
		case a := <-got:
			if a.code != 200 || a.body != "ERROR\nNot confirmed, try again later!" {
				t.Fatalf("%s cut short by the feed going down: %d %q, want 200 ERROR, not confirmed", path, a.code, a.body)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still waits after the feed went down", path)
		}
	}

	cutShort(t, "/push_appserver/v1/register", "type=fcm&node="+node+"&token=tok1")
	stored, err := store.Get(ctx, node)
	if err != nil || stored.Token != "tok1" {
		t.Fatalf("registration answered ERROR: %+v, %v; want it stored", stored, err)
	}
	code, body := post(t, "/push_appserver/v1/register", "type=fcm&node="+node+"&token=tok1")
	if code != 200 || body != "OK\n"+node+"\n"+stored.Secret {
		t.Fatalf("registering again: %d %q, want OK with the secret stored", code, body)
	}

	cutShort(t, "/push_appserver/v1/unregister", "type=fcm&node="+node)
	if _, err := store.Get(ctx, node); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("unregistration answered ERROR: %v; want the node gone", err)
	}
	code, body = post(t, "/push_appserver/v1/unregister", "type=fcm&node="+node)
	if code != 200 || body != "ERROR\nNode not found!" {
		t.Fatalf("unregistering again: %d %q", code, body)
	}

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `push_appserver_registration_failures_total{reason="unconfirmed"} 2`; !strings.Contains(string(b), want) {
		t.Errorf("metrics lack %s", want)
	}
	warned := 0
	for _, l := range strings.Split(log.String(), "\n") {
		if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "not confirmed") {
			continue
		}
		warned++
		if strings.Contains(l, node) {
			t.Errorf("a warning names the node: %s", l)
		}
	}
	if warned != 2 {
		t.Errorf("%d warnings of a change not confirmed, want 2:\n%s", warned, log.String())
	}
}
