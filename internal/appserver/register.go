package appserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/push-appserver/push-appserver/internal/push"
	"github.com/push-appserver/push-appserver/internal/registry"
)

// Account is the XMPP account a device registers from, as the adapter that
// speaks XMPP parsed and normalised it: the core compares and hashes these
// strings and knows nothing of JID syntax.
type Account struct {
	Bare   string // the normalised bare JID
	Domain string // its domainpart
}

// Caller is who asks to register or unregister a node, and what it proves.
// The ad-hoc commands set Account (the user's server vouches for it); the
// HTTP API leaves it empty and passes the secret the client sent, if any.
type Caller struct {
	Account Account
	// Secret is what the caller claims is the registration's current
	// secret: proof that it is the device that registered.
	Secret string
}

// RegistrationFailure is why a registration stored nothing, as counted in
// metrics, or (RegistrationUnconfirmed) why a registration or
// unregistration stored was answered as failed. Only "error" is the
// server's own failure (a full disk, a database away): the one to alert
// on. "unconfirmed" is the moment the database went away, or this
// instance's connection to it was cut, and passes by itself.
type RegistrationFailure string

const (
	// RegistrationInvalid: a value missing, too long or malformed, an app
	// that is not configured, or a token the app's format refuses.
	RegistrationInvalid RegistrationFailure = "invalid"
	// RegistrationForbidden: the node is another account's, or changing
	// it needs its secret.
	RegistrationForbidden RegistrationFailure = "forbidden"
	// RegistrationQuota: the domain holds its quota of registrations.
	RegistrationQuota RegistrationFailure = "quota"
	// RegistrationLimited: the account registered more often than
	// AccountRegisterLimit allows.
	RegistrationLimited RegistrationFailure = "limited"
	// RegistrationError: the registry could not be read or written.
	RegistrationError RegistrationFailure = "error"
	// RegistrationUnconfirmed: a registration or unregistration was
	// stored, but the change feed went down before every other instance
	// confirmed it (ErrUnconfirmed).
	RegistrationUnconfirmed RegistrationFailure = "unconfirmed"
)

// registered tells the observer about a registration that failed with
// err, if it did, and returns its arguments.
func (s *Service) registered(r registry.Registration, err error) (registry.Registration, error) {
	if err == nil || errors.Is(err, context.Canceled) {
		// A caller that went away is nobody's failure.
		return r, err
	}
	reason := RegistrationError
	switch {
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrUnknownType), errors.Is(err, ErrInvalidToken):
		reason = RegistrationInvalid
	case errors.Is(err, ErrForbidden):
		reason = RegistrationForbidden
	case errors.Is(err, ErrQuota):
		reason = RegistrationQuota
	case errors.Is(err, ErrLimited):
		reason = RegistrationLimited
	case errors.Is(err, ErrUnconfirmed):
		reason = RegistrationUnconfirmed
	}
	s.opts.Observer.RegistrationFailed(reason)
	return r, err
}

// Register creates or renews the registration of node for app typ and
// returns it with its secret. Who may do what (README, "Security"):
//
//   - A node nobody holds is registered for anyone, bound to the caller's
//     account when it comes over XMPP.
//   - The same type and token again renews it and keeps the secret, so
//     clients that re-register on every start keep working.
//   - A node bound to an account can be changed only by that account, or
//     by a caller that gives its secret; a node registered without an
//     account stays unbound unless its secret is given.
//   - A new token (or type) for an unbound node, without the secret, gets a
//     new secret: whoever knows only the node never learns the secret the
//     user's server pushes with, so never receives the device's pushes.
//     With StrictRegistration it is refused instead.
func (s *Service) Register(ctx context.Context, caller Caller, typ, node, token string) (registry.Registration, error) {
	return s.registered(s.registerNode(ctx, caller, typ, node, token))
}

func (s *Service) registerNode(ctx context.Context, caller Caller, typ, node, token string) (registry.Registration, error) {
	if err := s.checkRegistration(typ, node, token); err != nil {
		return registry.Registration{}, err
	}
	if err := s.admitAccount(caller.Account); err != nil {
		return registry.Registration{}, err
	}
	owner, err := s.owner(ctx, caller.Account)
	if err != nil {
		return registry.Registration{}, err
	}
	return s.register(ctx, caller, owner, registry.Registration{Node: node, Type: typ, Token: token, Domain: caller.Account.Domain}, false)
}

// maxConflictRetries bounds how often a registration that lost a race is
// tried again; each retry renews the winner, so one is almost always enough.
const maxConflictRetries = 5

// How a registration came about, for logs.
const (
	regNew     = "new"
	regRenewed = "renewed"
	regRotated = "new secret"
)

// register stores r with a fresh secret, or renews it. A registration
// made with r.Secret set to noSecret stores none: its publishes carry no
// secret, and its node, 32 random bytes, is the credential.
func (s *Service) register(ctx context.Context, caller Caller, owner string, r registry.Registration, moved bool) (registry.Registration, error) {
	secret := ""
	if r.Secret != noSecret {
		var err error
		if secret, err = randomHex(32); err != nil {
			return registry.Registration{}, err
		}
	}
	r.Secret = secret
	r.Owner = owner
	r.Registered = s.opts.Now().UTC()
	// A device moved from another app replaces a registration the
	// domain's count held: admitted already (moveAdmitted), and its old
	// node is gone, so a refusal now would leave it none.
	full := false
	if !moved {
		var err error
		if full, err = s.domainFull(ctx, r.Domain); err != nil {
			return registry.Registration{}, err
		}
	}
	// What decide reads and sets lives in one object: each variable of
	// its own that the function (which the store keeps, so on the heap)
	// captured went to the heap by itself, seven allocations a
	// registration.
	d := &regDecision{r: r}
	d.app, d.hasApp = s.apps[r.Type]
	decide := func(old registry.Registration, found bool) (registry.Registration, error) {
		d.newToken = false
		// The same type and token again is the device renewing, which
		// the domain's quota always lets through; the token as its
		// service names the device, so that a client writing its APNS
		// token's digits in the other case keeps the secret the user's
		// server pushes with.
		same := found && old.Type == d.r.Type && d.sameToken(old.Token, d.r.Token)
		if full && (!found || old.Domain != d.r.Domain && !same) {
			// Counted before the write, so concurrent registrations can
			// pass the cap by a few: a guard against filling the
			// registry, not an exact count.
			return registry.Registration{}, fmt.Errorf("%w: %d registrations for %s", ErrQuota, s.opts.MaxRegistrationsPerDomain, d.r.Domain)
		}
		if !found {
			d.how = regNew
			return d.r, nil
		}
		proof := caller.Secret != "" && subtle.ConstantTimeCompare([]byte(caller.Secret), []byte(old.Secret)) == 1
		// A device key is a salted hash of the account's JID: finding
		// the node by it proves the account, as its owner does (and is
		// all a registration stored before owners were kept has).
		mine := owner != "" && (old.Owner == owner || d.r.DeviceKey != "" && old.DeviceKey == d.r.DeviceKey)
		// A device key without an owner is a registration stored before
		// owners were kept: bound to its account all the same.
		if (old.Owner != "" || old.DeviceKey != "") && !mine && !proof {
			if same && owner != "" && old.Owner != "" && old.DeviceKey == "" && d.r.DeviceKey == "" {
				// The same device from another of its accounts: Monal's
				// v1-register-push names the node identifierForVendor
				// for every account. The token proves the device; the
				// registration stays as it is, bound to its owner.
				d.how = regRenewed
				old.Renewed = d.r.Registered
				return old, nil
			}
			return registry.Registration{}, fmt.Errorf("%w: the node is registered by another account", ErrForbidden)
		}
		// A node is bound to the account that made it, or to one that
		// gives its secret, never on other grounds: a node registered
		// without an account (over HTTP, or imported) would otherwise
		// go to whoever names it first, and the device, re-registering
		// without an account as always, be refused for good.
		if old.Owner == "" && !proof && !mine {
			d.r.Owner = ""
		}
		switch {
		case old.Type != d.r.Type:
			// Another app: start afresh, as mod_push_appserver did.
			if !mine && !proof && s.opts.StrictRegistration {
				return registry.Registration{}, fmt.Errorf("%w: the node is registered for another type; give its secret to change it", ErrForbidden)
			}
			d.how = regRotated
			return d.r, nil
		case same || mine || proof:
			d.how = regRenewed
			if !d.sameToken(old.Token, d.r.Token) {
				// The last success was the old token's and says nothing
				// of this one (tokenWorked). A renewal with the same
				// token, as clients make every time they connect,
				// keeps it: the token is the one that took the push.
				old.LastSuccessfulPush = time.Time{}
				d.newToken = true
			}
			old.Token = d.r.Token
			old.Renewed = d.r.Registered
			if old.Owner == "" {
				old.Owner = d.r.Owner
			}
			if d.r.DeviceKey != "" && (mine || proof) {
				old.Domain, old.DeviceKey, old.Account = d.r.Domain, d.r.DeviceKey, d.r.Account
			}
			if old.Domain == "" {
				old.Domain = d.r.Domain
			}
			return old, nil
		case s.opts.StrictRegistration:
			return registry.Registration{}, fmt.Errorf("%w: the node is registered with another token; give its secret to change it", ErrForbidden)
		default:
			// A new token without proof: maybe the device after a restore,
			// maybe someone who learned the node. The old secret dies, so
			// the user's server stops pushing to this node until the
			// device enables push again with the new one.
			d.how = regRotated
			return d.r, nil
		}
	}
	// The cache entry goes before the write as well as after it; the
	// success written for the node need only be forgotten after.
	s.cache.drop(d.r.Node)
	stored, err := s.store.Register(ctx, d.r.Node, decide)
	s.changed(d.r.Node)
	if err == nil && d.newToken {
		// Nor may a success of the old token, not written yet or
		// answered after this write (a push on its way to it), be
		// written over the cleared one.
		canonical := d.r.Token
		if app, ok := s.apps[d.r.Type]; ok {
			canonical = app.tokenName(d.r.Token)
		}
		s.status.tokenSet(d.r.Node, canonical)
	}
	if errors.Is(err, ErrForbidden) || errors.Is(err, ErrQuota) {
		s.logger.Info("registration refused", "app", d.r.Type, "node", d.r.Node, "reason", err)
		return registry.Registration{}, err
	}
	if errors.Is(err, registry.ErrUnconfirmed) {
		s.unconfirmed("registration", d.r.Type, d.r.Node, err)
	}
	if err != nil {
		return registry.Registration{}, fmt.Errorf("storing registration: %w", err)
	}
	s.opts.Observer.Registered(d.r.Type, d.how == regRenewed)
	s.logger.Info("registered device", "app", d.r.Type, "node", d.r.Node, "registration", d.how)
	return stored, nil
}

// regDecision is the state of one registration's decide function.
type regDecision struct {
	r      registry.Registration
	app    App
	hasApp bool
	how    string
	// newToken is set when a renewal brings another token (see decide).
	newToken bool
}

// sameToken is the app's sameToken, or equality for a type no app has.
func (d *regDecision) sameToken(x, y string) bool {
	if d.hasApp {
		return d.app.sameToken(x, y)
	}
	return x == y
}

// domainFull says whether domain holds its quota of registrations.
func (s *Service) domainFull(ctx context.Context, domain string) (bool, error) {
	if s.opts.MaxRegistrationsPerDomain <= 0 || domain == "" {
		return false, nil
	}
	n, err := s.store.CountDomain(ctx, domain, s.opts.MaxRegistrationsPerDomain)
	if err != nil {
		return false, fmt.Errorf("counting registrations of %s: %w", domain, err)
	}
	return n >= s.opts.MaxRegistrationsPerDomain, nil
}

func (s *Service) checkRegistration(typ, node, token string) error {
	if err := checkText("type", typ, MaxTypeLen); err != nil {
		return err
	}
	if err := checkText("node", node, MaxNodeLen); err != nil {
		return err
	}
	if err := checkText("token", token, MaxTokenLen); err != nil {
		if len(token) > MaxTokenLen {
			return fmt.Errorf("%w: %w", ErrInvalidToken, err)
		}
		return err
	}
	app, ok := s.apps[typ]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownType, typ)
	}
	if v, ok := app.Backend.(push.TokenValidator); ok {
		if err := v.ValidateToken(token); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidToken, err)
		}
	}
	return nil
}

// Unregister removes the registration of node if it belongs to app typ. A
// node bound to an account is removed only for that account or a caller
// that gives its secret; an unbound one for anyone who names it (the
// seed's API), or with StrictRegistration only with its secret.
func (s *Service) Unregister(ctx context.Context, caller Caller, typ, node string) (registry.Registration, error) {
	return s.unregister(ctx, caller, typ, node, "")
}

// unregister is Unregister; deviceKey, when set, is the device key the
// caller's account and device hash to, which proves the account as its
// owner does.
func (s *Service) unregister(ctx context.Context, caller Caller, typ, node, deviceKey string) (registry.Registration, error) {
	if err := checkText("type", typ, MaxTypeLen); err != nil {
		return registry.Registration{}, err
	}
	if err := checkText("node", node, MaxNodeLen); err != nil {
		return registry.Registration{}, err
	}
	if err := s.admitAccount(caller.Account); err != nil {
		// Counted as a registration refused so is: the limit is of
		// both, as http.register_limit's count is, and the alert on
		// the limits reads this one.
		s.opts.Observer.RegistrationFailed(RegistrationLimited)
		return registry.Registration{}, err
	}
	owner, err := s.owner(ctx, caller.Account)
	if err != nil {
		return registry.Registration{}, err
	}
	// The caller is checked against the registration read, and only
	// that one goes: one registered, renewed or replaced since (the
	// node removed meanwhile and registered anew by another account, or
	// with another secret) is read and checked again.
	var r registry.Registration
	for attempt := 0; ; attempt++ {
		old, err := s.store.Get(ctx, node)
		if err == nil && old.Type != typ {
			err = registry.ErrNotFound
		}
		if errors.Is(err, registry.ErrNotFound) {
			return registry.Registration{}, ErrNotFound
		}
		if err != nil {
			return registry.Registration{}, fmt.Errorf("looking up registration: %w", err)
		}
		proof := caller.Secret != "" && subtle.ConstantTimeCompare([]byte(caller.Secret), []byte(old.Secret)) == 1
		mine := owner != "" && (old.Owner == owner || deviceKey != "" && old.DeviceKey == deviceKey)
		switch {
		case (old.Owner != "" || old.DeviceKey != "") && !mine && !proof:
			err = fmt.Errorf("%w: the node is registered by another account", ErrForbidden)
		case old.Owner == "" && !proof && s.opts.StrictRegistration:
			err = fmt.Errorf("%w: give the node's secret to unregister it", ErrForbidden)
		}
		if err != nil {
			s.logger.Info("unregistration refused", "app", typ, "node", node, "reason", err)
			return registry.Registration{}, err
		}
		r, err = s.store.DeleteRead(ctx, old)
		s.changed(node)
		if errors.Is(err, registry.ErrNotFound) {
			if attempt < maxConflictRetries {
				continue
			}
			return registry.Registration{}, fmt.Errorf("removing registration: changed %d times while being removed: %w", attempt+1, registry.ErrConflict)
		}
		if errors.Is(err, registry.ErrUnconfirmed) {
			// Removed all the same: counted as removed, and as failed as
			// answered.
			s.forgetThrottle(node)
			s.redeliver.forget(node, old.Secret)
			s.opts.Observer.Unregistered(typ, "request")
			s.opts.Observer.RegistrationFailed(RegistrationUnconfirmed)
			s.unconfirmed("unregistration", typ, node, err)
		}
		if err != nil {
			return registry.Registration{}, fmt.Errorf("removing registration: %w", err)
		}
		break
	}
	s.forgetThrottle(node)
	// A push waiting for redelivery to it is forgotten with it.
	s.redeliver.forget(node, r.Secret)
	s.opts.Observer.Unregistered(typ, "request")
	s.logger.Info("unregistered device", "app", typ, "node", node)
	return r, nil
}

// unconfirmed logs a change stored but answered as failed
// (ErrUnconfirmed). Many at once are one outage of the database, which
// the others' logs tell of: the node is for debugging only.
func (s *Service) unconfirmed(change, app, node string, err error) {
	s.logger.Warn(change+" committed but not confirmed by the other instances; answered as failed, for the client to try again", "app", app, "err", err)
	s.logger.Debug(change+" not confirmed", "app", app, "node", node)
}

// admitAccount takes one of account's registrations for the minute
// (AccountRegisterLimit), or says when to come back. Callers without an
// account (HTTP) are bounded by address in the HTTP API.
func (s *Service) admitAccount(account Account) error {
	if account.Bare == "" {
		return nil
	}
	if ok, wait := s.accounts.Allow(maphash.String(s.accountSeed, account.Bare)); !ok {
		s.limited.Log("limit_per_minute", s.opts.AccountRegisterLimit, "retry_in", wait.Round(time.Second))
		return fmt.Errorf("%w: more than %d registrations a minute from this account; try again in %s", ErrLimited, s.opts.AccountRegisterLimit, wait.Round(time.Second))
	}
	return nil
}

// owner is the value stored for registrations account makes: a salted hash
// of its bare JID, so the registry never holds the JID; "" for no account.
func (s *Service) owner(ctx context.Context, account Account) (string, error) {
	if account.Bare == "" {
		return "", nil
	}
	return s.salted(ctx, "owner", account.Bare)
}

// SaltName is the registry's instance value that salts the hashes of
// accounts and devices (Registration.Owner, Registration.DeviceKey). It
// must go along when registrations move to another registry.
const SaltName = "device-key-salt"

// salted hashes parts with a salt shared by every instance using the
// registry. The "device" hash keeps the format device keys always had.
func (s *Service) salted(ctx context.Context, kind string, parts ...string) (string, error) {
	s.saltMu.Lock()
	if s.salt == "" {
		salt, err := s.store.InstanceValue(ctx, SaltName, func() (string, error) { return randomHex(32) })
		if err != nil {
			s.saltMu.Unlock()
			return "", fmt.Errorf("reading device key salt: %w", err)
		}
		s.salt = salt
	}
	salt := s.salt
	s.saltMu.Unlock()
	h := sha256.New()
	h.Write([]byte(salt))
	h.Write([]byte{0})
	if kind != "device" {
		h.Write([]byte(kind))
		h.Write([]byte{0})
	}
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkText refuses a registration value that is empty, longer than max
// bytes, not UTF-8 or holds a control character. Node and type come back in
// the line-based HTTP answers and in logs: a newline in them would let a
// client read the wrong line as the secret.
func checkText(field, v string, max int) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: %s is required", ErrBadRequest, field)
	case len(v) > max:
		return fmt.Errorf("%w: %s longer than %d bytes", ErrBadRequest, field, max)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadRequest, field)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: %s contains a control character", ErrBadRequest, field)
	}
	return nil
}
