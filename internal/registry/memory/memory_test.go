package memory_test

import (
	"testing"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/memory"
	"github.com/push-appserver/push-appserver/internal/registry/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store { return memory.New() })
}
