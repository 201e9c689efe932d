// Package e2e holds the end-to-end tests: a real Prosody with
// mod_cloud_notify delivering XEP-0357 pushes to the app server over a
// real component connection, with the real core and SQLite registry.
package e2e
