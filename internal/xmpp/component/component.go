// Package component connects the app server to an XMPP server as an
// external component (XEP-0114) and serves what arrives there: XEP-0357
// push publishes, XEP-0050 registration commands and service discovery.
//
// The handshake is mellium.im/xmpp's. After it, this package reads stanzas
// itself and writes replies as bytes under its own lock, because pushes are
// handled concurrently and answered in whatever order the push services
// answer, which the library's Serve loop (one handler call per stanza, with
// a synchronous default reply) cannot do.
package component

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/push-appserver/push-appserver/internal/appserver"
	"github.com/push-appserver/push-appserver/internal/logging"
	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/sockio"
	"github.com/push-appserver/push-appserver/internal/xmpp/adhoc"
	"github.com/push-appserver/push-appserver/internal/xmpp/xep0357"
	"github.com/push-appserver/push-appserver/internal/xmpp/xmlwalk"
)

// Pusher is what the component needs from the core besides registration.
type Pusher interface {
	Push(ctx context.Context, req appserver.PushRequest) error
	// PushToken pushes to a device token the publish names itself.
	PushToken(ctx context.Context, tp appserver.TokenPush) error
	// RejectMalformed records a publish that is not a push request.
	RejectMalformed(node, why string)
}

// Service is the core as the component uses it.
type Service interface {
	Pusher
	adhoc.Registrar
}

// DefaultMaxInFlight is how many pushes one connection handles at once
// when the configuration sets no max_in_flight.
const DefaultMaxInFlight = 256

// Options configure one component connection.
type Options struct {
	Addr   string // host:port of the XMPP server's component listener
	JID    string // our component JID, e.g. push.example.org
	Secret string
	// Commands selects the registration commands offered.
	Commands adhoc.Options
	// Dialects selects the publishes taken without a registration.
	Dialects Dialects
	// MaxInFlight bounds the stanzas handled at once; when full the reader
	// waits, which pushes back on the server. Default 256. A push waiting
	// on a timer holds none, up to 3 times as many such pushes (see
	// waitingPerSlot), nor does one with its app's push service, which the
	// core bounds per app (appserver.AppMaxInFlight).
	MaxInFlight int
	// KeepAlive is how long the stream may be quiet: after half of it
	// with nothing written, a space goes out (for NATs and firewalls on
	// the way); after all of it with nothing read, a ping that the XMPP
	// server routes back to us; and when three pings, half of it apart,
	// pass without a read, the connection is taken as dead and replaced
	// (three: ejabberd balances a ping to our JID over every instance
	// connected with it, so one may go to another, which answers it
	// with a result balanced again). A connection
	// cut without a word (a NAT or firewall that forgot it, a server
	// whose machine vanished) would otherwise wait for TCP to give up,
	// many minutes, while the server's pushes go nowhere. Default 60 s.
	KeepAlive time.Duration
	// MaxStanza bounds the size in bytes of the IQs served: a larger one
	// is answered modify/not-acceptable. Default 64 KiB. No stanza ends
	// the stream by its size: anyone can send one to our JID, and XMPP
	// servers route stanzas of up to 256 KiB (Prosody's clients) or
	// 512 KiB (between servers), and write them again on the way, larger
	// (Prosody writes each " of a text as six bytes, and an element's
	// name space on every element whose parent's differs: see
	// decoder.skipStanza), so one such stanza would otherwise take the
	// component, and every push it carries, off its server. Messages and
	// presences carry nothing for us and are skipped without being
	// kept; of an IQ, skippedStanzas times MaxStanza is read, and the
	// rest skipped and the IQ answered as too large. A push publish is
	// served up to that size, since its walk
	// keeps a few KiB of it: with Prosody's push_notification_with_body
	// or ejabberd's include_body, it carries a message's whole body, and
	// anyone could send a message long enough.
	MaxStanza int64
	// MaxBackoff caps the wait between reconnection attempts. Default
	// 1.8 s: the component is back within 2 s of the XMPP server, and
	// after the first few attempts it tries at most once a second.
	MaxBackoff time.Duration
	// WriteTimeout bounds one write to the XMPP server; when it passes
	// (the server stopped reading) the stream is closed and reconnected.
	// Default 30 s.
	WriteTimeout time.Duration
	// MaxReplyQueue bounds the bytes of replies waiting to be written;
	// when full, handlers wait and the reader stops reading. Default
	// 256 KiB.
	MaxReplyQueue int
	// HandshakeTimeout bounds the stream's opening and the handshake: a
	// server that accepts the connection and says nothing more (hung, or
	// a proxy in front of a dead one) is left and tried again. Default
	// 15 s.
	HandshakeTimeout time.Duration
	// CloseGrace bounds how long a shutdown waits for the pushes under way
	// to answer before it closes the stream. Default 1 s.
	CloseGrace time.Duration
	// DrainTimeout bounds how long, once we closed the stream, the
	// stanzas the server had already sent are still read (it normally
	// closes its side at once). Default 5 s.
	DrainTimeout time.Duration
	// Released, when set, is called when a shutdown closed the stream and
	// the XMPP server closed its side: it now takes another connection
	// for the component (a Prosody standby of another instance).
	Released func()
	// Retry, when set, cuts a wait between connection attempts short:
	// another instance released the component.
	Retry <-chan struct{}
	// OnState, when set, is called on every connect and disconnect.
	OnState func(connected bool)
	// OnPanic, when set, is called for each IQ whose handling panicked
	// (and was answered wait).
	OnPanic func()
	Logger  *slog.Logger
	// Peers, when set, are the process's connections by JID, this one
	// included (New adds it). An XMPP server may route a stanza for one
	// component over another's stream: ejabberd routes every host of one
	// ejabberd_service listener over every connection to it. Such a
	// stanza is then served as the component it is addressed to would,
	// if that one is connected to the same server (the same address,
	// or a stream to the same IP and port): another server may not act
	// for its accounts.
	Peers *Peers
}

// Peers are the component connections of one process, by JID.
type Peers struct {
	mu sync.RWMutex
	m  map[string]*Conn
}

func (p *Peers) add(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*Conn{}
	}
	p.m[c.opts.JID] = c
}

// servingFor is the connection whose configuration serves a stanza
// addressed to to: c's own, unless to names another of the process's
// components.
func (c *Conn) servingFor(to string) *Conn {
	if c.opts.Peers == nil || to == c.opts.JID {
		return c // nearly every stanza
	}
	if i := strings.IndexByte(to, '/'); i >= 0 {
		to = to[:i]
	}
	if i := strings.IndexByte(to, '@'); i >= 0 {
		to = to[i+1:]
	}
	if to == "" || to == c.opts.JID {
		return c
	}
	c.opts.Peers.mu.RLock()
	o := c.opts.Peers.m[to]
	c.opts.Peers.mu.RUnlock()
	if o == nil {
		// The peers are known by their JIDs' normal form, and a to is
		// as its sender wrote it: ejabberd routes by the prepared
		// domain and passes the to on unchanged, in another case, with
		// a final dot or as an A-label. The same component all the same
		// (RFC 7622 §3.2), to be served with its own options.
		j, err := jid.New("", to, "")
		if err != nil || j.Domainpart() == to {
			return c
		}
		if to = j.Domainpart(); to == c.opts.JID {
			return c
		}
		c.opts.Peers.mu.RLock()
		o = c.opts.Peers.m[to]
		c.opts.Peers.mu.RUnlock()
	}
	// Only a component on the same XMPP server: another server (run by
	// others, with domains of its own) may not speak for it.
	if o != nil && (o.opts.Addr == c.opts.Addr || sameListener(o, c)) {
		return o
	}
	return c
}

// sameListener reports whether a's and b's last streams went to one
// address and port: the same server, whatever the addresses configured
// (a host name and its IP, the default and "localhost:5347").
func sameListener(a, b *Conn) bool {
	ra, rb := a.remote.Load(), b.remote.Load()
	if ra == nil || rb == nil {
		return false
	}
	if *ra == *rb {
		return true
	}
	// One port at 127.0.0.1 and ::1: one listener on this machine (a
	// dual-stack "::", or "localhost" resolved to ::1 beside 127.0.0.1).
	// Not the rest of 127/8, where servers of their own may listen.
	pa, err1 := netip.ParseAddrPort(*ra)
	pb, err2 := netip.ParseAddrPort(*rb)
	return err1 == nil && err2 == nil && pa.Port() == pb.Port() &&
		loopbackHost(pa.Addr()) && loopbackHost(pb.Addr())
}

// loopbackHost is 127.0.0.1 or ::1, which "localhost" resolves to.
func loopbackHost(a netip.Addr) bool {
	a = a.Unmap()
	return a == netip.IPv6Loopback() || a == netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// Conn is one component connection, kept up until Run's context ends.
type Conn struct {
	opts      Options
	svc       Service
	cmds      *adhoc.Commands
	connected atomic.Bool
	// standingBy: the XMPP server refused the last attempt because it
	// has another connection for the component (see Run).
	standingBy atomic.Bool
	// foundDead is when (clock.elapsed, plus one; 0: never, or since a
	// stream came up) the keep-alive last gave up a stream the server
	// stopped answering: the server may still hold it (see
	// heldByDeadStream).
	foundDead atomic.Int64
	// givenUp is the last stream the keep-alive gave up, watched for the
	// server's close (see watchGivenUp); nil once that ended. Guarded by
	// givenUpMu.
	givenUpMu sync.Mutex
	givenUp   net.Conn
	// refused: the XMPP server refused the last handshake for our
	// configuration (secret or JID), not for a passing reason.
	refused atomic.Bool
	// streams counts the streams that came up (handshake done): Run
	// tells a stream that broke from an attempt that failed again.
	streams atomic.Int64
	logger  *slog.Logger
	panics  *logging.Limited // IQs whose handling panicked, one stack a second
	// warnedCleartext: the warning about a non-loopback peer is logged
	// once per connection, not on every reconnect.
	warnedCleartext atomic.Bool
	// handlers counts the IQs being handled, of every session.
	handlers sync.WaitGroup
	// peerReads counts this component's keep-alive pings that the XMPP
	// server routed back over another of the process's streams (Peers).
	peerReads atomic.Uint64
	// pingTag tells this connection's keep-alive pings from those of
	// other processes on the same JID.
	pingTag string
	// remote is the address and port the last stream was dialed to.
	remote atomic.Pointer[string]
	// handling counts the IQs being handled, and handlingPeak is the
	// most at once, for the tests: each holds a worker goroutine, and
	// each holds a place or is a push with its push service, so they are
	// within those bounds exactly, where the workers alive also count
	// those that let their place go and are not back yet, as many as the
	// reader got to while the scheduler kept them waiting.
	handling, handlingPeak atomic.Int64
	// clock times the keep-alive.
	clock clock
}

// clock is what the keep-alive times the stream's silences by: elapsed,
// on the monotonic clock. now is the wall clock, which times none of
// them: NTP or an operator may step it. Tests set their own, to step one
// apart from the other.
type clock struct {
	now     func() time.Time
	elapsed func() time.Duration
}

// systemClock is the running server's clock.
func systemClock() clock {
	start := time.Now()
	return clock{now: time.Now, elapsed: func() time.Duration { return time.Since(start) }}
}

// New returns a connection; call Run to connect.
func New(opts Options, svc Service) *Conn {
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	// read sizes its places at waitingPerSlot and 2 times it: keep
	// those from overflowing (the configuration refuses more).
	opts.MaxInFlight = min(opts.MaxInFlight, 1<<20)
	// As the server writes it in what it routes to us and checks in
	// what we send (Prosody closes the stream on a from in another case).
	if j, err := jid.Parse(opts.JID); err == nil && j.Localpart() == "" && j.Resourcepart() == "" {
		opts.JID = j.Domainpart()
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.MaxStanza <= 0 {
		opts.MaxStanza = 64 << 10
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 1800 * time.Millisecond
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.MaxReplyQueue <= 0 {
		opts.MaxReplyQueue = 256 << 10
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 15 * time.Second
	}
	if opts.CloseGrace <= 0 {
		opts.CloseGrace = time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	logger := opts.Logger.With("component", opts.JID)
	c := &Conn{
		opts:   opts,
		svc:    svc,
		cmds:   adhoc.New(svc, opts.Commands),
		logger: logger,
		clock:  systemClock(),
		panics: logging.NewLimited(logger, time.Now, slog.LevelError, 1, "handling an IQ panicked; answered wait and the server goes on", "panics while handling IQs not logged (rate limit)"),
	}
	var tag [4]byte
	crand.Read(tag[:])
	c.pingTag = hex.EncodeToString(tag[:])
	if opts.Peers != nil {
		opts.Peers.add(c)
	}
	return c
}

// Connected reports whether the stream is established now.
func (c *Conn) Connected() bool { return c.connected.Load() }

// StandingBy reports whether the XMPP server refused the last attempt to
// connect because another connection serves the component (Prosody takes
// one per component), so this one waits for it to go.
func (c *Conn) StandingBy() bool { return c.standingBy.Load() }

// deadStreamHeld bounds how long after the keep-alive gave up a stream a
// conflict is taken as the server holding that stream rather than another
// connection for the component: the server learns that the stream is dead
// only when its TCP gives up writing to it, about 15 minutes on Linux.
const deadStreamHeld = 20 * time.Minute

// heldByDeadStream reports whether a conflict now most likely comes from
// our own stream that went silent: the network between us and the server
// lost it without a word (a NAT or firewall that forgot it), so the
// server never heard it close. Prosody (component_conflict_resolve
// kick_new, its default) then refuses every new connection and routes
// every push into the dead one, where it is lost: that is no standby's
// wait, but an outage.
func (c *Conn) heldByDeadStream() bool {
	at := c.foundDead.Load()
	return at != 0 && c.clock.elapsed()-time.Duration(at-1) < deadStreamHeld
}

// watchGivenUp keeps conn's socket open past the session's close of conn,
// sends the server our end of it (FIN), and reads until the server closes
// its side: then the server no longer holds the stream, and a conflict
// is another connection's (an instance standing by that took over), not
// our dead stream's. That is what happens when the network or the server
// was only slow (a server that stalled, a partition that healed before
// TCP gave up): without it, this instance reported the component down,
// and logged that every push was lost, for deadStreamHeld while another
// served it. A stream the network lost without a word never answers, and
// stays taken as held. stamp is foundDead's value for this stream.
func (c *Conn) watchGivenUp(conn net.Conn, stamp int64) {
	fc, ok := conn.(interface{ File() (*os.File, error) })
	if !ok {
		return
	}
	f, err := fc.File() // a second descriptor: closing conn sends nothing
	if err != nil {
		return
	}
	dup, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return
	}
	c.givenUpMu.Lock()
	if c.givenUp != nil {
		c.givenUp.Close() // an older stream's: foundDead is this one's now
	}
	c.givenUp = dup
	c.givenUpMu.Unlock()
	go func() {
		defer func() {
			c.givenUpMu.Lock()
			if c.givenUp == dup {
				c.givenUp = nil
			}
			c.givenUpMu.Unlock()
			dup.Close()
		}()
		if cw, ok := dup.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		dup.SetReadDeadline(time.Now().Add(deadStreamHeld))
		buf := make([]byte, 4096)
		for {
			_, err := dup.Read(buf)
			if err == nil {
				continue // what the server sent before it heard us
			}
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				// The server closed it: it holds it no more.
				c.foundDead.CompareAndSwap(stamp, 0)
			}
			return
		}
	}()
}

// closeGivenUp stops watching the stream the keep-alive gave up.
func (c *Conn) closeGivenUp() {
	c.givenUpMu.Lock()
	defer c.givenUpMu.Unlock()
	if c.givenUp != nil {
		c.givenUp.Close()
		c.givenUp = nil
	}
}

// Refused reports whether the XMPP server refused the last handshake
// because of our configuration: a wrong secret, a JID it does not have.
func (c *Conn) Refused() bool { return c.refused.Load() }

// Run keeps the connection up until ctx is done, and returns ctx's error.
//
// Reconnection: jittered exponential backoff from 100 ms, capped at
// MaxBackoff, so the component is back soon after the XMPP server returns
// whatever happened before; once past the first few quick attempts it
// waits at least a second between attempts (or MaxBackoff, if lower), so a
// server that is down is not hammered. An attempt is one TCP dial, cheap
// for both sides while the server is down.
func (c *Conn) Run(ctx context.Context) error {
	// Pushes of a stream that broke go on after their session ended; a
	// shutdown waits for them too, as for its own session's, so that
	// none is cut off (the user's server had no answer and sends it no
	// more) or outlives the core it reports to.
	defer c.handlers.Wait()
	defer c.closeGivenUp()
	const (
		quickAttempts = 4
		stable        = 10 * time.Second // a session this long was a success
	)
	floor := min(time.Second, c.opts.MaxBackoff)
	backoff := push.Backoff{Base: min(100*time.Millisecond, c.opts.MaxBackoff), Max: c.opts.MaxBackoff}
	failures := 0
	var lost logging.Repeats
	warnedHeld := false // since the last stream that came up
	for {
		start := time.Now()
		streams := c.streams.Load()
		err := c.session(ctx)
		if c.streams.Load() != streams {
			warnedHeld = false
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) > stable {
			backoff.Reset()
			failures = 0
		}
		failures++
		wait := backoff.Next()
		if failures > quickAttempts {
			wait = max(wait, floor)
		}
		switch {
		case errors.Is(err, stream.Conflict) && c.heldByDeadStream():
			// Not standing by: no one serves the component, and the
			// health page must say so (down, not ready).
			c.standingBy.Store(false)
			if !warnedHeld {
				warnedHeld = true
				c.logger.Error("the XMPP server refuses the component (conflict) since our last stream to it went silent: it most likely still holds that stream and routes every push into it, where it is lost, until its TCP gives up (about 15 minutes); retrying. With a single instance on Prosody, component_conflict_resolve = \"kick_old\" lets the new connection replace it", "every", floor)
			}
		case errors.Is(err, stream.Conflict):
			// Prosody takes one connection per component: another
			// instance serves it, this one stands by.
			if !c.standingBy.Swap(true) {
				c.logger.Info("standing by: the XMPP server has another connection for this component; retrying until it goes", "every", floor)
			}
		default:
			c.standingBy.Store(false)
			var se stream.Error
			c.refused.Store(errors.As(err, &se) && (se.Err == "not-authorized" || se.Err == "host-unknown" || se.Err == "improper-addressing"))
			if c.streams.Load() != streams {
				// A stream that was up broke: news, however the
				// attempts before it failed.
				lost.Ended()
			}
			if repeated, ok := lost.Failed(err.Error(), time.Now()); ok {
				c.logger.Warn("component connection lost, reconnecting", "err", err, "in", wait.Round(time.Millisecond), "attempts_not_logged", repeated)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-c.opts.Retry:
			// Another instance released the component: connect now.
			t.Stop()
			backoff.Reset()
			failures = 0
		}
	}
}

// session runs one connection from dial to its end.
func (c *Conn) session(ctx context.Context) error {
	addr, err := jid.Parse(c.opts.JID)
	if err != nil {
		return fmt.Errorf("component JID: %w", err)
	}
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", c.opts.Addr)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", c.opts.Addr, err)
	}
	raw = sockio.Wrap(raw)
	defer raw.Close()
	remote := raw.RemoteAddr().String()
	c.remote.Store(&remote)
	if leavesHost(raw.RemoteAddr()) && c.warnedCleartext.CompareAndSwap(false, true) {
		c.logger.Warn("the component connection is not encrypted and leaves this machine: secrets, tokens and push contents cross the network in clear text; connect to the XMPP server over loopback or a tunnel", "addr", raw.RemoteAddr().String())
	}
	lr := &limitReader{Conn: raw}
	lr.limit.Store(c.opts.MaxStanza)
	sc := newStreamConn(lr)

	// The handshake's bound is the connection's deadline. NewSession
	// ends on its context by setting a deadline in the past and clearing
	// it at once, and a read blocked meanwhile goes on waiting: a server
	// that accepts and never answers held the component, and a shutdown,
	// for good. A shutdown gives a handshake under way a second more, so
	// that a stream the server already counts as ours is closed cleanly.
	raw.SetDeadline(time.Now().Add(c.opts.HandshakeTimeout))
	cut := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		raw.SetDeadline(time.Now().Add(time.Second))
		close(cut)
	})
	_, err = component.NewSession(context.WithoutCancel(ctx), addr, []byte(c.opts.Secret), sc)
	if !stop() {
		<-cut
	}
	if err != nil {
		return fmt.Errorf("handshake: %w%s", err, handshakeHint(err, c.opts.JID))
	}
	raw.SetDeadline(time.Time{})
	dec, err := stanzaDecoder(sc)
	if err != nil {
		return fmt.Errorf("reading the stream: %w", err)
	}
	c.streams.Add(1)
	c.setConnected(true)
	defer c.setConnected(false)
	c.logger.Info("component connected", "addr", c.opts.Addr)

	w := newWriter(raw, c.opts.WriteTimeout, c.opts.MaxReplyQueue, c.clock)
	work := newTracker()
	w.others = func() bool { return work.running.Load() > 1 }
	var wg sync.WaitGroup
	defer wg.Wait()
	kctx, stopKeepAlive := context.WithCancel(ctx)
	defer stopKeepAlive()
	wg.Go(func() { c.keepAlive(kctx, w, lr) })
	readDone := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		select {
		case <-ctx.Done():
			c.closeStream(raw, w, work, readDone)
		case <-readDone:
			if ctx.Err() == nil {
				// A broken stream: reconnect at once. The pushes
				// under way finish on their own, and their answers
				// have nowhere to go; waiting for them (a slow push
				// service, a push the throttle holds for its next
				// window) kept us away from the XMPP server, which
				// meanwhile answers publishes with errors of its own
				// (ejabberd drops the push session at the first).
				return
			}
		}
		// Shutting down: the reader has stopped, no handler starts any
		// more, and the pushes under way finish before the core closes.
		<-work.quiet()
	}()

	err = c.read(dec, lr, w, work)
	if ctx.Err() == nil {
		// Broken stream: say so now, not after the pushes under way.
		c.setConnected(false)
	}
	close(readDone)
	<-drained
	stopKeepAlive()
	wg.Wait()
	if ctx.Err() != nil {
		c.logger.Info("component stream closed")
		return ctx.Err()
	}
	w.flush() // answers of pushes that finished as the stream broke
	// Pushes still under way find the writer failed, and a handler
	// waiting for room in its queue is let go.
	w.fail(fmt.Errorf("stream ended: %w", err))
	return err
}

// closeStream ends a session on shutdown without losing a push. Until the
// XMPP server sees our closing tag it keeps routing publishes here, so
// everything read is served as usual, to the end: first, for at most
// CloseGrace, until the pushes under way have answered; then the closing
// tag goes out, the server routes to other connections (ejabberd balances
// over them, a Prosody standby takes over), and what it had already sent
// us is still read and pushed until it closes its side (or DrainTimeout
// passes). Those last pushes cannot be answered any more, which both
// servers treat as a timeout: the push session stays.
func (c *Conn) closeStream(raw net.Conn, w *writer, work *tracker, readDone <-chan struct{}) {
	grace := time.NewTimer(c.opts.CloseGrace)
	defer grace.Stop()
	select {
	case <-work.quiet():
	case <-grace.C:
	case <-readDone:
		return
	}
	c.setConnected(false)
	if err := w.closeStream(); err != nil {
		c.logger.Debug("closing stream", "err", err)
	}
	raw.SetReadDeadline(time.Now().Add(c.opts.DrainTimeout))
	<-readDone
	// The server closed its side (or stopped sending): another
	// connection may have the component now, while our last pushes
	// finish.
	if c.opts.Released != nil {
		c.opts.Released()
	}
}

// leavesHost reports whether a connection to a goes over the network
// rather than loopback.
func leavesHost(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && !tcp.IP.IsLoopback()
}

func (c *Conn) setConnected(v bool) {
	if v {
		c.standingBy.Store(false)
		c.refused.Store(false)
		c.foundDead.Store(0)
		// A stream is up: the one given up no longer matters.
		c.closeGivenUp()
	}
	if c.connected.Swap(v) == v {
		return
	}
	if c.opts.OnState != nil {
		c.opts.OnState(v)
	}
}

// DefaultKeepAlive is Options.KeepAlive's default: quiet streams are
// pinged after a minute, which costs nothing, and a dead one is replaced
// within three.
const DefaultKeepAlive = 60 * time.Second

// keepAliveID starts the id of the pings keepAlive sends.
const keepAliveID = "keepalive-"

// keepAlive keeps the stream's silences short, and ends a stream whose
// server no longer answers (see Options.KeepAlive) by closing lr's
// connection, which ends the session like any broken stream. Its ping
// goes to our own JID: both Prosody and ejabberd route a component's
// stanza to itself back over the stream, so the ping needs nothing of the
// server but its routing, and no knowledge of its domains. While the
// reader waits for a free slot (MaxInFlight) it reads nothing, but pushes
// end within their timeout, far sooner than a ping goes unanswered.
func (c *Conn) keepAlive(ctx context.Context, w *writer, lr *limitReader) {
	t := time.NewTicker(c.opts.KeepAlive / 4)
	defer t.Stop()
	reads, heard := lr.reads.Load()+c.peerReads.Load(), c.clock.elapsed()
	var pinged time.Duration // when the last ping went, while unanswered
	var seq uint64
	// unanswered counts the pings sent since the last read: ejabberd
	// balances a ping to our own JID over every connection with it (other
	// instances, see Options.Peers), so one ping may reach another
	// connection, which answers it with a result that is balanced again.
	// A stream is taken as dead only after maxUnanswered pings in a row.
	unanswered := 0
	const maxUnanswered = 3
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := c.clock.elapsed()
			if r := lr.reads.Load() + c.peerReads.Load(); r != reads {
				reads, heard, unanswered = r, now, 0
			}
			switch {
			case unanswered > 0 && now-pinged >= c.opts.KeepAlive/2 && unanswered < maxUnanswered:
				seq++
				if err := w.write(pingIQ(c.opts.JID, c.pingTag, seq)); err != nil {
					return
				}
				pinged = now
				unanswered++
			case unanswered > 0 && now-pinged >= c.opts.KeepAlive/2:
				c.logger.Warn("the XMPP server did not answer a ping; reconnecting", "quiet_for", (now - heard).Round(time.Second))
				// The server may not have heard of it: see
				// heldByDeadStream.
				stamp := int64(c.clock.elapsed()) + 1
				c.foundDead.Store(stamp)
				c.watchGivenUp(lr.Conn, stamp)
				lr.Close()
				return
			case unanswered == 0 && now-heard >= c.opts.KeepAlive:
				seq++
				if err := w.write(pingIQ(c.opts.JID, c.pingTag, seq)); err != nil {
					return
				}
				pinged = now
				unanswered = 1
			case w.sinceWrite() >= c.opts.KeepAlive/2:
				if err := w.write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}
}

// pingIQ is keepAlive's ping number seq from and to jid.
func pingIQ(jid, tag string, seq uint64) []byte {
	var b bytes.Buffer
	b.WriteString(`<iq type='get' id='` + keepAliveID + tag + `-`)
	b.WriteString(strconv.FormatUint(seq, 10))
	b.WriteString(`' from='`)
	escapeText(&b, jid)
	b.WriteString(`' to='`)
	escapeText(&b, jid)
	b.WriteString(`'><ping xmlns='urn:xmpp:ping'/></iq>`)
	return b.Bytes()
}

// skippedStanzas is how many times MaxStanza of a stanza the decoder
// hands out before it reads the rest without keeping it (see
// Options.MaxStanza).
const skippedStanzas = 64

// read decodes top-level stanzas until the stream ends and dispatches the
// IQs, at most MaxInFlight at once (and as many again coming back from a
// wait, and waitingPerSlot times as many waiting on a timer, besides the
// pushes with their push service, which the core bounds per app).
// It serves whatever arrives until the stream ends, also while the
// session shuts down (see closeStream).
func (c *Conn) read(d *decoder, lr *limitReader, w *writer, work *tracker) error {
	pl := push.NewSplitPlaces(c.opts.MaxInFlight, c.opts.MaxInFlight, waitingPerSlot*c.opts.MaxInFlight)
	// Fresh and resumed handlers at once, and the one finishing.
	workers := newWorkers(2*c.opts.MaxInFlight+1, func(m *streamIQ) {
		defer c.handlers.Done()
		defer work.done()
		defer m.slot.Release()
		// Out of the count before its place goes to the next IQ.
		defer c.handling.Add(-1)
		n := c.handling.Add(1)
		for p := c.handlingPeak.Load(); n > p && !c.handlingPeak.CompareAndSwap(p, n); p = c.handlingPeak.Load() {
		}
		c.handle(m.slot.Context(), m, w)
	})
	defer workers.close()
	// No stanza ends the stream by its size: anyone can send our JID a
	// message, or an IQ with a long id, larger than MaxStanza, and the
	// server's serialization of it may be larger by far (see
	// decoder.skipStanza). What is kept of a stanza is bounded instead:
	// past skippedStanzas × MaxStanza the decoder hands out no more of
	// it, and the rest is read and dropped. An IQ over MaxStanza is
	// answered (see Options.MaxStanza).
	lr.limit.Store(math.MaxInt64)
	d.setBound(skippedStanzas * c.opts.MaxStanza)
	// walkIn keeps nothing of an IQ's payloads after a publish when it
	// has a function to call at one; the bound needs no raising there.
	publish := func() {}
	for {
		d.lx.c.newStanza()
		t, err := d.Next()
		if err != nil && (errors.Is(err, errTooManyBindings) || errors.Is(err, errStanzaTooLarge)) {
			// A stanza whose opening tag the decoder refuses, or cut
			// past the bound: read through, unanswered, as nothing
			// of it was read whole (its id, its addresses).
			if err := d.skipStanza(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("server closed the stream")
			}
			return err
		}
		switch t.Kind {
		case xmlwalk.EndElement:
			// The only end at this level: the decoder checks nesting.
			return errors.New("server closed the stream")
		case xmlwalk.CharData:
			if !isSpace(t.Text) {
				return errors.New("text between stanzas")
			}
			continue // whitespace keepalives
		}
		if t.Name.Space == nsStream {
			if t.Name.Local != "error" {
				return fmt.Errorf("unexpected <stream:%s/> on an established stream", t.Name.Local)
			}
			return readStreamError(d, t)
		}
		if t.Name.Local != "iq" {
			// Messages and presences carry nothing for us: read
			// through, whatever their size.
			if err := d.skipStanza(); err != nil {
				return err
			}
			d.shrink()
			continue
		}
		m := new(streamIQ)
		q := &m.iq
		err = q.walkIn(d, t, &m.mem, publish)
		// An IQ past the decoder's bound, or with more name-space
		// declarations than it resolves, is read to its end, and
		// answered as one over MaxStanza, whatever it carries: its
		// payload was not read whole.
		truncated := err != nil && (errors.Is(err, errStanzaTooLarge) || errors.Is(err, errTooManyBindings))
		if truncated {
			err = d.skipStanza()
		}
		over := truncated || lr.n.Load() > c.opts.MaxStanza
		if over {
			d.shrink()
		}
		if err != nil {
			return fmt.Errorf("reading IQ: %w", err)
		}
		if q.Type != "get" && q.Type != "set" {
			continue // results and errors addressed to us need no answer
		}
		if over && len(q.ID)+len(q.From)+len(q.To) > int(c.opts.MaxStanza) {
			// Its answer, echoing them escaped, could exceed what the
			// server reads from us (Prosody: 512 KiB) and end the
			// stream: no sender can use such an answer.
			continue
		}
		if truncated || over && q.PubSub == nil {
			typ, cond := stanza.Modify, stanza.NotAcceptable
			if q.PubSub != nil {
				// A publish is the user's server's: answered as a
				// notification too large for the push service is
				// (pushAnswer), so the push session stays (ejabberd
				// ends it on any type but wait, a Tigase server on
				// not-acceptable).
				typ, cond = stanza.Wait, stanza.BadRequest
			}
			c.reply(w, func(b *bytes.Buffer) {
				errorIQ(b, q, stanzaErr(typ, cond, "IQ too large"))
			})
			continue
		}
		if q.Type == "get" && q.From == q.To && strings.HasPrefix(q.ID, keepAliveID) {
			if p := c.servingFor(q.From); p.opts.JID == q.From {
				switch {
				case !strings.HasPrefix(q.ID, keepAliveID+p.pingTag+"-"):
					// Another instance's ping on our JID or a
					// peer's, balanced here: answer, and the answer
					// may reach it.
					c.reply(w, func(b *bytes.Buffer) { resultIQ(b, q) })
				case p != c:
					// A ping of another component of this process,
					// routed here: the server answered it all the
					// same.
					p.peerReads.Add(1)
				}
				continue // our own ping, back: reading it was its purpose
			}
		}
		if q.ID == "" {
			// An answer must carry the request's id; without one the
			// sender could not match it to anything.
			c.reply(w, func(b *bytes.Buffer) { errorIQ(b, q, stanzaErr(stanza.Modify, stanza.BadRequest, "IQ without id")) })
			continue
		}
		// Not the session's context: a push under way when we shut
		// down still completes (the core bounds it).
		m.slot.Init(context.Background(), pl)
		m.slot.Take(context.Background()) // ends only with a place
		c.handlers.Add(1)
		work.start()
		workers.run(m)
	}
}

// workers hands IQs to goroutines that stay for the session, so that an IQ
// runs on a stack already grown by an earlier one: a fresh goroutine per
// IQ grew its stack through SQLite's deep frames and the XML decoder every
// time, about a tenth of the CPU of a push. A handler waiting on a timer
// (Pause) keeps its worker, so a burst of such pushes starts as many; once
// they are done, the workers past keep end rather than stay parked for the
// rest of the session.
type workers struct {
	jobs    chan *streamIQ
	handle  func(*streamIQ)
	keep    int64
	live    atomic.Int64
	started atomic.Int64 // goroutines started, for the tests
}

// newWorkers returns workers of which at most keep wait for an IQ.
func newWorkers(keep int, handle func(*streamIQ)) *workers {
	return &workers{jobs: make(chan *streamIQ), handle: handle, keep: int64(keep)}
}

// run hands q to an idle worker, or starts one.
func (p *workers) run(q *streamIQ) {
	select {
	case p.jobs <- q:
	default:
		p.started.Add(1)
		p.live.Add(1)
		go p.work(q)
	}
}

// work handles q, then each IQ handed to it, until close or until more
// than keep workers are left. A plain receive rather than a select over
// jobs and a stop channel: a select was a few hundred instructions of
// every IQ.
func (p *workers) work(q *streamIQ) {
	p.handle(q)
	for {
		if n := p.live.Load(); n > p.keep && p.live.CompareAndSwap(n, n-1) {
			return
		}
		q, ok := <-p.jobs
		if !ok {
			p.live.Add(-1)
			return
		}
		p.handle(q)
	}
}

// close lets the idle workers end; busy ones end after their IQ. run
// must not be called after it: read, run's only caller, closes them as
// it returns.
func (p *workers) close() { close(p.jobs) }

// waitingPerSlot is how many pushes may wait on a timer without an
// in-flight slot, per slot (MaxInFlight): 768 by default, about 6 MiB of
// stacks. A throttle's delayed push that finds none free is refused as
// throttled (push.WaitOrRefuse) rather than wait holding its slot: held,
// 4 × MaxInFlight such pushes at nodes of one client's own stopped the
// reader for a window, and every other server's pushes on the stream
// with it.
//
// A handler's push gives its slot up while it only waits (push.Places)
// and, after the wait, takes one of its own kind, resumed, rather than a
// fresh one: pushes coming back from a wait then never queue in front of
// fresh ones either. With no waiting place free, a retry's backoff waits
// holding its slot, and once every slot is held so the reader stops until
// their waits end.
const waitingPerSlot = 3

// tracker counts the IQs being handled and tells when none is.
type tracker struct {
	mu      sync.Mutex
	n       int
	waiters []chan struct{}
	running atomic.Int32 // n, readable without mu
}

func newTracker() *tracker { return &tracker{} }

// start counts one more handler.
func (t *tracker) start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	t.running.Store(int32(t.n))
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	t.running.Store(int32(t.n))
	if t.n == 0 {
		for _, ch := range t.waiters {
			close(ch)
		}
		t.waiters = nil
	}
}

// quiet returns a channel closed the next time no handler runs (at once
// if none does now).
func (t *tracker) quiet() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	if t.n == 0 {
		close(ch)
	} else {
		t.waiters = append(t.waiters, ch)
	}
	return ch
}

// reply renders an answer with render and queues it.
func (c *Conn) reply(w *writer, render func(*bytes.Buffer)) {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	defer bufPool.Put(b)
	render(b)
	if err := w.write(b.Bytes()); err != nil {
		c.logger.Debug("writing reply", "err", err)
	}
}

// handle answers one IQ.
func (c *Conn) handle(ctx context.Context, m *streamIQ, w *writer) {
	q := &m.iq
	h := c.servingFor(q.To)
	c.reply(w, func(b *bytes.Buffer) {
		defer c.recoverIQ(q, b)
		switch {
		case q.Type == "set" && q.PubSub != nil:
			h.handlePush(ctx, q, &m.mem.summary, b)
		case q.Type == "set" && q.Command != nil:
			resp, err := h.cmds.Execute(ctx, q.From, h.opts.JID, q.Command)
			if err != nil {
				var se stanza.Error
				if !errors.As(err, &se) {
					se = stanzaErr(stanza.Wait, stanza.InternalServerError, "")
				}
				errorIQ(b, q, se)
			} else if err := payloadIQ(b, q, resp); err != nil {
				b.Reset()
				errorIQ(b, q, stanzaErr(stanza.Wait, stanza.InternalServerError, ""))
			}
		case q.Type == "get" && q.Info != nil:
			payloadIQ(b, q, h.discoInfo(q.Info.Node))
		case q.Type == "get" && q.Items != nil:
			payloadIQ(b, q, h.discoItems(q.Items.Node))
		default:
			errorIQ(b, q, stanzaErr(stanza.Cancel, stanza.ServiceUnavailable, ""))
		}
	})
}

// recoverIQ, deferred while an IQ is handled, answers it wait when its
// handling panicked, and logs the panic with its stack (one a second: the
// same stanza may come again and again). A bug that one odd stanza sets
// off must not end the process: every push under way would be lost, and
// while no component is connected ejabberd answers publishes with an
// error that deletes push sessions.
func (c *Conn) recoverIQ(q *iq, b *bytes.Buffer) {
	p := recover()
	if p == nil {
		return
	}
	if c.opts.OnPanic != nil {
		c.opts.OnPanic()
	}
	c.panics.Log("panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	b.Reset()
	errorIQ(b, q, stanzaErr(stanza.Wait, stanza.InternalServerError, ""))
}

// handlePush answers a publish. Only an answer that the registration is
// gone is of type cancel: ejabberd drops the user's push session on the
// first error of any other type than wait, and Prosody counts them towards
// disabling push. Everything that may pass is wait.
//
// The push's summary is read into sum, the IQ's memory.
func (c *Conn) handlePush(ctx context.Context, q *iq, sum *push.Summary, b *bytes.Buffer) {
	req, err := xep0357.ParseInto(q.PubSub, sum)
	if errors.Is(err, xep0357.ErrNoSecret) && c.secretless() {
		// Siskin enables push with a node alone; a wrong node finds
		// nothing, as a wrong secret would.
		err = nil
	}
	if err != nil {
		node := ""
		if q.PubSub.Publish != nil {
			node = q.PubSub.Publish.Node
		}
		c.svc.RejectMalformed(node, err.Error())
		errorIQ(b, q, stanzaErr(stanza.Modify, stanza.BadRequest, err.Error()))
		return
	}
	err = c.push(ctx, req, q.From)
	errorType, cond, text := pushAnswer(err)
	if errorType == "" {
		resultIQ(b, q)
		return
	}
	errorIQ(b, q, stanzaErr(errorType, cond, text))
}

// pushAnswer maps the core's answer to a push onto the IQ error to send;
// an empty type means success.
//
// Every answer that may pass is of type wait, and its condition one of
// those a Tigase server keeps the device's registration on
// (internal-server-error, service-unavailable, remote-server-timeout,
// bad-request; any other it deletes at once, unknown to the client):
// ejabberd and Prosody decide by the type, Tigase by the condition alone.
func pushAnswer(err error) (stanza.ErrorType, stanza.Condition, string) {
	switch {
	case err == nil:
		return "", "", ""
	case errors.Is(err, push.ErrPayloadTooLarge):
		// An encrypted notification larger than the push service takes
		// (register-device answered max-payload-size): one message's
		// size, not the push session's fault, and the next may fit.
		// wait: ejabberd deletes the session on the first error of any
		// other type, and Prosody counts those towards disabling push.
		// bad-request, not not-acceptable, which would make a Tigase
		// server (the one encrypting for Siskin) delete the device's
		// registration at once; the text says what was wrong.
		return stanza.Wait, stanza.BadRequest, "Encrypted notification too large for the push service"
	case errors.Is(err, appserver.ErrUnknownType):
		// A tokenless or publish-options push naming an app we do not
		// have: a client's mistake, or ours (an app not configured yet,
		// renamed, left out of a reload). Not cancel, on which ejabberd
		// drops the push session: once the app is configured, pushes
		// go through without the user enabling push again.
		return stanza.Wait, stanza.InternalServerError, "Unknown push module or service"
	case errors.Is(err, appserver.ErrNotFound):
		return stanza.Cancel, stanza.ItemNotFound, "Unknown push node/secret"
	case errors.Is(err, appserver.ErrThrottled):
		// Not resource-constraint: on it a Tigase server deletes the
		// device's registration, and a burst of three messages would
		// end the user's pushes for good.
		return stanza.Wait, stanza.ServiceUnavailable, "Rate limit exceeded"
	case errors.Is(err, appserver.ErrUnavailable):
		return stanza.Wait, stanza.ServiceUnavailable, "Shutting down, try again later"
	default:
		return stanza.Wait, stanza.InternalServerError, "Push service failure"
	}
}

func (c *Conn) discoInfo(node string) *discoInfo {
	if node == adhoc.NS {
		return &discoInfo{Node: node, Identities: []discoIdentity{{Category: "automation", Type: "command-list"}}}
	}
	for _, it := range c.cmds.Items() {
		if it.Node == node {
			return &discoInfo{Node: node,
				Identities: []discoIdentity{{Category: "automation", Type: "command-node", Name: it.Name}},
				Features:   []discoFeature{{Var: adhoc.NS}, {Var: "jabber:x:data"}}}
		}
	}
	features := []discoFeature{{Var: xep0357.NS}, {Var: nsDiscoInfo}, {Var: nsDiscoItems}, {Var: adhoc.NS}}
	if len(c.opts.Commands.TigaseProviders) > 0 {
		// Siskin picks a push component whose features include its
		// provider ("tigase:messenger:apns:1").
		for _, p := range slices.Sorted(maps.Keys(c.opts.Commands.TigaseProviders)) {
			features = append(features, discoFeature{Var: p})
		}
		for _, f := range adhoc.TigaseFeatures {
			features = append(features, discoFeature{Var: f})
		}
	}
	return &discoInfo{
		Node:       node,
		Identities: []discoIdentity{{Category: "pubsub", Type: "push", Name: "push-appserver"}},
		Features:   features,
	}
}

func (c *Conn) discoItems(node string) *discoItems {
	res := &discoItems{Node: node}
	if node == adhoc.NS {
		for _, it := range c.cmds.Items() {
			res.Items = append(res.Items, discoItem{JID: c.opts.JID, Node: it.Node, Name: it.Name})
		}
	}
	return res
}

// handshakeHint says what an operator fixes for the XMPP server's refusal
// of the handshake, which it repeats for as long as the configurations
// disagree: a bare "not-authorized" names neither the secret nor the
// JID. ejabberd answers not-authorized for a JID its listener does not
// list too.
func handshakeHint(err error, jid string) string {
	var se stream.Error
	if !errors.As(err, &se) {
		return ""
	}
	switch se.Err {
	case "not-authorized":
		return fmt.Sprintf(" (the XMPP server refused the secret for %s: it must be [[component]] secret, and the server must have the component: Prosody's component_secret of Component %q, or ejabberd's password of %[1]s in the ejabberd_service listener's hosts)", jid, jid)
	case "host-unknown", "improper-addressing":
		return fmt.Sprintf(" (the XMPP server has no component %s: Prosody needs Component %[1]q, ejabberd %[1]s in the ejabberd_service listener's hosts)", jid)
	}
	return ""
}
