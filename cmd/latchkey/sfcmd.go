package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/latchkey/latchkey/salesforce"
)

func init() {
	register("salesforce check", "log in to Salesforce, read a record and check fields and permissions; says what to fix", cmdSalesforceCheck)
}

func cmdSalesforceCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("salesforce check", stderr)
	path := fs.String("config", "", "configuration file")
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 2
	}
	if !cfg.Salesforce.Enabled {
		fmt.Fprintln(stderr, "latchkey salesforce check: [salesforce] enabled = false in", cfg.File)
		return 2
	}
	c, err := salesforce.New(cfg.Salesforce, &http.Client{Timeout: cfg.Salesforce.Timeout})
	if err != nil {
		fmt.Fprintln(stderr, "latchkey salesforce check:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc := 0
	for _, r := range c.Check(ctx) {
		mark := "OK  "
		if !r.OK {
			mark, rc = "FAIL", 1
		}
		fmt.Fprintf(stdout, "%s %-28s %s\n", mark, r.Name, r.Detail)
	}
	if used, limit := c.APIUsage(); limit > 0 {
		fmt.Fprintf(stdout, "API requests used in the last 24 h: %d of %d\n", used, limit)
	}
	return rc
}
