package console

import (
	"context"
	"time"
)

// WarmEvery is Warm with its tick chosen by the test.
func (c *Console) WarmEvery(ctx context.Context, tick time.Duration) { c.warm(ctx, tick) }

// WarmOnce runs one pass of Warm and returns when it is done.
func (c *Console) WarmOnce() { c.warmPass(context.Background()) }
