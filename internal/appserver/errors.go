package appserver

import (
	"errors"

	"github.com/push-appserver/push-appserver/internal/registry"
)

// Errors returned by Service. Adapters map them onto their protocol's
// answers (XMPP error conditions, HTTP "ERROR" lines).
var (
	// ErrBadRequest: a required value is missing or too long.
	ErrBadRequest = errors.New("bad request")
	// ErrUnknownType: the registration names an app that is not configured.
	ErrUnknownType = errors.New("unknown push type")
	// ErrInvalidToken: the app's backend rejected the device token's format.
	ErrInvalidToken = errors.New("invalid push token")
	// ErrNotFound: unknown node, or a wrong secret. The two are one error
	// so that a caller cannot probe which nodes exist.
	ErrNotFound = errors.New("node or secret not found")
	// ErrForbidden: the registration belongs to another XMPP account, or
	// changing it needs proof (its current secret) that the caller lacks.
	ErrForbidden = errors.New("not allowed to change this registration")
	// ErrQuota: the account's domain holds as many registrations as
	// MaxRegistrationsPerDomain allows.
	ErrQuota = errors.New("registration quota of the domain reached")
	// ErrLimited: the account made more registrations and
	// unregistrations within the last minute than AccountRegisterLimit
	// allows; try again later.
	ErrLimited = errors.New("registration rate limit of the account reached")
	// ErrThrottled: the push was refused by the rate limit.
	ErrThrottled = errors.New("rate limit exceeded")
	// ErrPushFailed: the push service did not accept the push, for a
	// reason that may pass (its outage, a retry budget spent, an app
	// marked misconfigured, a registry error): try again later.
	ErrPushFailed = errors.New("push failed")
	// ErrUnavailable: the server is shutting down; try again later.
	ErrUnavailable = errors.New("shutting down")
	// ErrUnconfirmed: the registration or unregistration was stored, but
	// another instance sharing the registry may not have heard of it and
	// push with what it cached (registry.ErrUnconfirmed): not done yet,
	// as far as the client can tell; trying again finds it stored.
	ErrUnconfirmed = registry.ErrUnconfirmed
)
