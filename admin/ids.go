package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/latchkey/latchkey/audit"
	"github.com/latchkey/latchkey/queue"
)

// An operator starts from whatever id they hold: the message id Salesforce's
// email log shows ("250 2.0.0 OK queued as <id>"), a queue item id (one
// recipient of that message, from queue list or a log line) or the
// Message-ID header of the recipient's copy. Every route that takes an {id}
// accepts the three.

// idHelp says what an id may be, for 400 and 404 answers.
const idHelp = "a message id (as in \"250 2.0.0 OK queued as <id>\"), a queue item id or a Message-ID"

// checkID refuses what can be none of the three kinds.
func checkID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("id: want %s", idHelp)
	case len(id) > 998:
		return fmt.Errorf("id: longer than 998 bytes; want %s", idHelp)
	case queue.ValidID(id):
		return nil
	case strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return fmt.Errorf("id: %q contains a space or control character; want %s", clip(id, 64), idHelp)
	case !strings.Contains(id, "@"):
		// RFC 5322 3.6.4: a msg-id is id-left "@" id-right.
		return fmt.Errorf("id: %q is neither a latchkey id (16 or 18 characters a-z, 2-7) nor a Message-ID (left@right)", clip(id, 64))
	}
	return nil
}

// items resolves the request's {id} to its queue items and answers 400 or
// 404 itself.
func (s *server) items(w http.ResponseWriter, r *http.Request) ([]*queue.Item, bool) {
	id := r.PathValue("id")
	if err := checkID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	items, err := s.o.Queue.Lookup(id)
	if err != nil {
		s.internal(w, r, err)
		return nil, false
	}
	if len(items) == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no message or queue item %q (looked up as %s)", clip(id, 200), idHelp))
		return nil, false
	}
	return items, true
}

// lifeline is the audit timeline an id names: for a latchkey id the whole
// life of its message (received and signed included), narrowed to one
// recipient for an item id; for a Message-ID every event filed under it.
func (s *server) lifeline(id string) ([]audit.Event, error) {
	if !queue.ValidID(id) {
		return audit.Show(s.o.Store.DB, id)
	}
	msgID, itemID := queue.MsgIDOf(id), ""
	if msgID != id {
		itemID = id
	}
	items, err := s.o.Queue.Lookup(id)
	if err != nil {
		return nil, err
	}
	mid := ""
	if len(items) > 0 {
		mid = items[0].MessageID
	}
	evs, err := audit.Lifeline(s.o.Store.DB, msgID, itemID, mid)
	if errors.Is(err, audit.ErrNotFound) && itemID == "" {
		// A message refused for every recipient (suppressed, rate limited)
		// has no items; its events may still be filed under the id.
		return audit.Show(s.o.Store.DB, id)
	}
	return evs, err
}
