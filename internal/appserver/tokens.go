package appserver

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// TokenPush is a push to a device token the publish itself names, with no
// registration and no secret: fpush's tokenless pushes (the node is the
// token) and MongooseIM's publish-options (device_id and service).
// Anyone who knows the component's JID and a device token can wake that
// device; that is what these dialects are.
type TokenPush struct {
	App   string
	Token string
	// Request is what the publish carried besides: its node (named in
	// the notification), summary and priority marker.
	Request PushRequest
	// Silent asks for a background push whatever the app's priority
	// (MongooseIM's silent publish option).
	Silent bool
}

// PushToken pushes to tp.Token through app tp.App. An app that is not
// configured is ErrUnknownType; a token the app's service cannot have
// issued, or one blocked because the service declared it dead, is
// ErrNotFound. Pushes are throttled per token as registrations are per
// node. A token the service declares dead is blocked for
// Options.TokenBlock: it cannot be deleted (nothing is stored), and the
// client's re-enabling is not seen by us (XEP-0357's enable goes to the
// user's server only), so the block ends by time. A successful push after
// that lifts it; a dead answer blocks it again.
func (s *Service) PushToken(ctx context.Context, tp TokenPush) error {
	start := time.Now()
	if s.draining.Load() {
		s.opts.Observer.Pushed("", OutcomeFailed, time.Since(start))
		return ErrUnavailable
	}
	ctx, cancel := s.deadlines.WithDeadline(ctx, start.Add(s.opts.PushTimeout))
	defer cancel()
	return s.pushToken(ctx, tp, start)
}

// purgeBlockedTokens drops the block list's ended entries, so that dead
// tokens pushed once do not pile up for ever. Run calls it hourly.
func (s *Service) purgeBlockedTokens(ctx context.Context) {
	n, err := s.store.PurgeBlockedTokens(ctx, s.opts.Now())
	if err != nil {
		s.logger.Warn("purging the token block list", "err", err)
		return
	}
	if n > 0 {
		s.logger.Info("purged ended token blocks", "count", n)
	}
}

func (s *Service) pushToken(ctx context.Context, tp TokenPush, start time.Time) error {
	node := tp.Request.Node
	if node == tp.Token {
		// Tokenless: the node is the token, which stays out of logs and
		// out of the payload.
		node = ""
	}
	if tp.App == "" {
		// A publish to a node we do not know that names no app, with
		// none configured to take it (no tokenless_app): nothing to push
		// to, now or after any configuration change, as for a
		// registered server's unknown node.
		s.reject(node, RejectUnknownNode, start)
		return ErrNotFound
	}
	app, ok := s.apps[tp.App]
	if !ok {
		s.opts.Observer.Rejected(RejectMalformed)
		s.rejected(node, "unknown app for a token push")
		return fmt.Errorf("%w %q", ErrUnknownType, tp.App)
	}
	if push.TokensNameEndpoints(app.Backend) {
		// A WebPush subscription names the URL we would POST to: taken
		// from a publish, any XMPP user could have us send requests
		// anywhere, to a new address each time, with none of the
		// registration's limits. Neither dialect has such tokens, so
		// the node is unknown like any other.
		s.reject(node, RejectUnknownNode, start)
		return ErrNotFound
	}
	if err := checkText("token", tp.Token, MaxTokenLen); err != nil {
		s.reject(node, RejectUnknownNode, start)
		return ErrNotFound
	}
	if v, ok := app.Backend.(push.TokenValidator); ok && v.ValidateToken(tp.Token) != nil {
		// Not registered, and not shaped like this service's tokens
		// either: an unknown node like any other.
		s.reject(node, RejectUnknownNode, start)
		return ErrNotFound
	}
	if c, ok := app.Backend.(push.TokenCanonicalizer); ok {
		// One device, one throttle window and one block-list entry,
		// however a stranger spells its token.
		tp.Token = c.CanonicalToken(tp.Token)
	}
	now := s.opts.Now()
	block, err := s.blockOf(ctx, tp.App, tp.Token)
	switch {
	case err != nil:
		s.opts.Observer.Pushed(tp.App, OutcomeFailed, time.Since(start))
		err = fmt.Errorf("reading the block list: %w", err)
		s.failures.LogKey(tp.App, "app", tp.App, "node", node, "err", err)
		return fmt.Errorf("%w: %w", ErrPushFailed, err)
	case s.blockHolds(now, block.Until):
		s.reject(node, "blocked token", start)
		return ErrNotFound
	}

	prio := app.Priority.Resolve(tp.Request.Important())
	if tp.Silent && prio != push.PriorityVoIP {
		prio = push.PrioritySilent
	}
	// Both callers set the push's deadline on ctx already.
	waited, at, err := s.admit(ctx, throttleKey{app: app.Name, token: s.tokenHash(tp.Token), prio: prio}, tp.App, start, time.Time{})
	if err != nil {
		return err
	}
	start = start.Add(waited)
	if err := s.admitDevice(tp.App, app.canonicalToken(tp.Token), node, tp.Request.Source, start, at); err != nil {
		return err
	}
	n := push.Notification{App: tp.App, Node: node, Token: tp.Token, Priority: prio, Summary: tp.Request.Summary, Encrypted: tp.Request.Encrypted}
	end, err := s.sendGated(ctx, &app, n, time.Now())
	if err == nil {
		s.redeliver.settled(redeliveryKey{app: tp.App, token: tp.Token})
		s.redeliver.took(tp.App)
		if !block.Until.IsZero() {
			// An expired block, and the token works again.
			if err := s.store.UnblockToken(context.WithoutCancel(ctx), tp.App, tp.Token, block.Until); err != nil {
				s.logger.Error("unblocking token", "app", tp.App, "err", err)
			} else {
				s.blocks.set(tp.App, tp.Token, registry.BlockedToken{})
			}
		}
		s.opts.Observer.Pushed(tp.App, OutcomeSuccess, end.Sub(start))
		return nil
	}
	if dead, ok := push.IsDeadToken(err); ok {
		s.opts.Observer.Pushed(tp.App, OutcomeDeadToken, end.Sub(start))
		if s.blockDead(context.WithoutCancel(ctx), tp.App, tp.Token, node, tp.Request.Source, dead) != nil {
			return fmt.Errorf("%w: %w", ErrPushFailed, err)
		}
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	s.opts.Observer.Pushed(tp.App, failedOutcome(err), end.Sub(start))
	s.credentialsRefused(tp.App, err)
	s.failures.LogKey(tp.App, "app", tp.App, "node", node, "err", err)
	if redeliverable(err) {
		n.Summary = s.keptSummary(tp.App, n.Summary)
		s.redeliver.keepChecked(redeliveryKey{app: tp.App, token: tp.Token}, n, "", err)
		s.redeliver.awaitWritten(context.WithoutCancel(ctx))
	}
	return fmt.Errorf("%w: %w", ErrPushFailed, err)
}

// doubtDead returns err, unless it is a dead token the app's breaker
// judged from an answer a misconfigured app gets for every token too
// (APNS BadDeviceToken or DeviceTokenNotForTopic, FCM SENDER_ID_MISMATCH)
// for node's token, and that token took a push since it was registered:
// then a temporary failure, and the registration stays. A token that
// worked is not refused so while the app's configuration stays as it was
// (Apple answers 410 Unregistered, FCM UNREGISTERED, for one it stopped
// taking), so the refusal points at the configuration: a reload or
// restart onto the other APNS environment, topic or FCM project. The
// breaker alone cannot tell: a developer's device whose token works in
// the wrong environment proves the configuration, and its pushes outvote
// the refusals of as many users' devices, whose registrations went.
func (s *Service) doubtDead(ctx context.Context, node, token string, err error) error {
	dead, ok := push.IsDeadToken(err)
	if !ok || !dead.Suspect || node == "" {
		return err
	}
	worked, ok := s.tokenWorked(context.WithoutCancel(ctx), node, token)
	if !ok {
		return err
	}
	return &push.TemporaryError{Reason: fmt.Sprintf("refused (%s), but the token took a push at %s, since it was registered: the app's configuration (APNS environment or topic, FCM project) may be at fault, so the registration is kept",
		dead.Reason, worked.UTC().Format(time.RFC3339))}
}

// tokenWorked returns when a push to node's registration last went
// through, if one did since its token was last set and the registration
// still has token. A registry that cannot be read says no.
//
// A renewal with the same token (a client registers every time it
// connects, and a push that wakes it makes it connect) leaves the
// success standing; one that brings another token clears it (see
// register), so a success since the registration was made is one of
// the token it holds.
func (s *Service) tokenWorked(ctx context.Context, node, token string) (time.Time, bool) {
	r, err := s.store.Get(ctx, node)
	if err != nil || r.Token != token {
		return time.Time{}, false
	}
	last := r.LastSuccessfulPush
	if at, ok := s.status.pendingSuccess(node); ok && at.After(last) {
		last = at
	}
	if last.IsZero() || last.Before(r.Registered) {
		return time.Time{}, false
	}
	return last, true
}

// unregisterDead removes the registrations of a token its push service
// declared dead (those not renewed since) and says whether node, the
// push's, was among them. Other nodes may share the token (an app with
// several accounts, p2's node per group chat) and may go while node,
// registered again since, stays: its server must not hear it is gone.
func (s *Service) unregisterDead(ctx context.Context, app, token, node string, dead *push.DeadTokenError) bool {
	if dead.Suspect {
		return s.unregisterSuspect(ctx, app, token, node, dead)
	}
	removed, err := s.unregisterToken(ctx, app, token, dead.Since)
	if err != nil {
		s.logger.Error("removing dead token", "app", app, "node", node, "err", err)
		return false
	}
	for _, r := range removed {
		if r.Node == node {
			return true
		}
	}
	// Kept: the device registered its token again after the service
	// saw it die. The user's server hears "wait", so the log says why,
	// as it does for every other push that fails.
	s.failures.LogKey(app, "app", app, "node", node, "err", fmt.Errorf("%w; the device registered since, so its registration is kept", dead))
	return false
}

// tokenReplaced reports whether node is still registered for app, with a
// token other than token: the device registered a new one since a push
// to token set out. A registry that cannot be read says no.
func (s *Service) tokenReplaced(ctx context.Context, app, node, token string) bool {
	r, err := s.store.Get(ctx, node)
	return err == nil && r.Type == app && r.Token != token
}

// unregisterSuspect removes node's registration alone, for a refusal a
// misconfigured app gets for every token (dead.Suspect) that doubtDead
// let through: node's own token took no push, but another registration
// of the same token (another account of the device, a node per group
// chat) may have, and doubtDead vouched for none of them. Each keeps its
// registration until a push of its own is refused so. It says whether
// node was removed; not when it was registered again since, or with
// another token.
func (s *Service) unregisterSuspect(ctx context.Context, app, token, node string, dead *push.DeadTokenError) bool {
	r, err := s.store.Get(ctx, node)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return false
	case err != nil:
		s.logger.Error("removing dead token", "app", app, "node", node, "err", err)
		return false
	case r.Type != app || r.Token != token || !r.LastRegistered().Before(dead.Since):
		s.failures.Log("app", app, "node", node, "err", fmt.Errorf("%w; the device registered since, so its registration is kept", dead))
		return false
	}
	// Removed only as read: a renewal since (a new token, or the same
	// one registered again) keeps it, as one made before the read does.
	if _, err := s.store.DeleteRead(ctx, r); err != nil {
		if !errors.Is(err, registry.ErrNotFound) {
			s.logger.Error("removing dead token", "app", app, "node", node, "err", err)
		}
		return false
	}
	s.removedDead(app, node, r.Secret, dead.Since)
	return true
}

// blocksPerSource is how many dead tokens one push source
// (PushRequest.Source: a publish's sending domain) may put on the block
// list a minute, as many at once. A stranger naming made-up tokens gets
// each one answered dead, and each would be a row for TokenBlock; at
// this rate one source takes more than a day to fill the list to
// DefaultMaxBlockedTokens, and so cannot push the blocks of tokens that
// are really dead out of it (see trimBlockedTokens) faster than that.
// A server's own users' dead tokens come far slower: its push session
// ends on the first cancel. A token past the limit is answered dead all
// the same, only not blocked: its next push asks the push service again.
const blocksPerSource = 60

// blockDead puts a token the push service declared dead on the block
// list for TokenBlock, unless source (the push's, "" for a push being
// redelivered, which no stranger chooses) has put blocksPerSource there
// within the minute; node is the push's, for the log ("" when the token
// was the node).
func (s *Service) blockDead(ctx context.Context, app, token, node, source string, dead *push.DeadTokenError) error {
	if source != "" {
		if ok, _ := s.blockSources.Allow(maphash.String(s.sourceSeed, source)); !ok {
			s.blockRefused.Log("app", app, "node", loggedNode(node), "source", source)
			return nil
		}
	}
	b := registry.BlockedToken{Type: app, Token: token, Since: dead.Since.UTC(), Until: s.opts.Now().Add(s.opts.TokenBlock).UTC(), Reason: storedReason(dead.Reason)}
	if err := s.store.BlockToken(ctx, b); err != nil {
		s.logger.Error("blocking dead token", "app", app, "err", err)
		return err
	}
	s.blocks.set(app, token, b)
	s.logger.Info("blocked dead token", "app", app, "node", node, "until", b.Until.Format(time.RFC3339))
	if every := s.trimEvery(); every > 0 && s.blocked.Add(1)%every == 0 {
		s.trimBlockedTokens(ctx)
	}
	return nil
}

// trimEvery is how many blocks this instance writes between trims of the
// block list, 0 when it has no cap: a hundredth of the cap. A trim reads
// the whole list (4 ms at 100,000 rows on SQLite, where a block takes
// 90 µs), too much for every block; so the list may pass its cap by this
// many rows per instance writing to it, 1 %, until the next trim.
func (s *Service) trimEvery() int64 {
	if s.opts.MaxBlockedTokens <= 0 {
		return 0
	}
	return max(int64(s.opts.MaxBlockedTokens)/100, 1)
}

// trimBlockedTokens holds the block list to MaxBlockedTokens rows,
// dropping the blocks that end soonest. Refusing new blocks at the cap
// instead would keep the old ones, but a stranger who filled the list
// with made-up tokens would then stop every real dead token from being
// blocked for TokenBlock, a week; pushes to them would all go to the
// push service, which asks us not to send them. Dropping the soonest
// ending keeps what the list is for: the newest blocks, among them every
// token pushed to again since (each dead answer blocks it anew, to end
// latest), hold; a real block dropped costs one push the service answers
// dead, which blocks the token again. blocksPerSource bounds how fast
// one source can cycle the list. Run calls it hourly too, for the blocks
// other instances sharing the registry wrote.
func (s *Service) trimBlockedTokens(ctx context.Context) {
	if s.opts.MaxBlockedTokens <= 0 {
		return
	}
	n, err := s.store.TrimBlockedTokens(ctx, s.opts.MaxBlockedTokens)
	if err != nil {
		s.logger.Warn("trimming the token block list", "err", err)
		return
	}
	if n > 0 {
		s.logger.Warn("the token block list reached its cap; dropped the blocks ending soonest (made-up tokens pushed by a stranger, or max_blocked_tokens too low)", "dropped", n, "max_blocked_tokens", s.opts.MaxBlockedTokens)
	}
}

// blockSlack is how far past TokenBlock from now a block may end and
// still hold: instances sharing a PostgreSQL registry write blocks with
// their own clocks, which may be a little ahead of this one's.
const blockSlack = time.Hour

// blockHolds reports whether a block ending at until refuses pushes at
// now. One ending further ahead than any block lasts (TokenBlock, and
// blockSlack) was written while the clock was ahead, since set back by
// NTP: it is taken as ended, or it would refuse the token for as long
// as the clock was wrong, up to years, rather than TokenBlock. The
// token is tried again, and blocked anew if it is still dead.
func (s *Service) blockHolds(now, until time.Time) bool {
	return now.Before(until) && !until.After(now.Add(s.opts.TokenBlock+blockSlack))
}

// blockOf returns the block list's entry for a token, the zero entry when
// it has none.
func (s *Service) blockOf(ctx context.Context, app, token string) (registry.BlockedToken, error) {
	if b, ok := s.blocks.get(app, token); ok {
		return b, nil
	}
	b, err := s.store.GetBlockedToken(ctx, app, token)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		b = registry.BlockedToken{}
	case err != nil:
		return b, err
	}
	s.blocks.fill(app, token, b)
	return b, nil
}

// blockCache keeps what tokenless pushes read of the block list, so that
// the pushes to a device token read it once a ttl rather than once each.
// With the registry's read of the token as a node (which the registration
// cache now keeps too), that was two database reads per push, and a
// tokenless push cost 60 % more CPU than a registered one.
//
// This instance's own blocks and unblocks replace the entry at once.
// Another instance's block is seen within ttl: until then this one may
// push to the token again, and the service's answer that it is dead
// blocks it here too.
//
// It keeps a hash of each token (see blockKey) and no token in its
// entries: a tokenless push names its token, which may be 4 KiB long,
// and a stranger naming ever new ones would otherwise fill the cache
// with as many of them as it holds entries.
type blockCache struct {
	c    *otter.Cache[blockKey, registry.BlockedToken]
	seed maphash.Seed
}

// blockKey is a token's app and a 64-bit hash of the token, with a
// secret seed, so that nobody can pick a token that shares an entry with
// someone else's.
type blockKey struct {
	app   string
	token uint64
}

func (c *blockCache) key(app, token string) blockKey {
	return blockKey{app, maphash.String(c.seed, token)}
}

// newBlockCache returns a cache of up to size entries, each trusted for
// ttl, by clock; nil (no cache) when size is 0 or less.
func newBlockCache(size int, ttl time.Duration, clock cacheClock) *blockCache {
	if size <= 0 {
		return nil
	}
	return &blockCache{c: newOtter[blockKey, registry.BlockedToken](size, ttl, clock.elapsed, nil), seed: maphash.MakeSeed()}
}

func (c *blockCache) get(app, token string) (registry.BlockedToken, bool) {
	if c == nil {
		return registry.BlockedToken{}, false
	}
	return c.c.GetIfPresent(c.key(app, token))
}

// fill keeps what a read of the block list found, unless this instance
// changed the entry meanwhile: its own change is newer than the read.
func (c *blockCache) fill(app, token string, b registry.BlockedToken) {
	if c == nil {
		return
	}
	b.Token = "" // the key names it
	c.c.SetIfAbsent(c.key(strings.Clone(app), token), b)
}

// set records this instance's change of a token's entry.
func (c *blockCache) set(app, token string, b registry.BlockedToken) {
	if c == nil {
		return
	}
	b.Token = "" // the key names it
	c.c.Set(c.key(strings.Clone(app), token), b)
}
