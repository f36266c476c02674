package bounce

import (
	"encoding/json"
	"fmt"
	"io"
)

// FileReport is the JSON form of one parsed file, as printed by
// "latchkey bounce parse -json".
type FileReport struct {
	File         string          `json:"file"`
	Bounce       bool            `json:"bounce"`
	Complaint    bool            `json:"complaint"`
	AutoReply    bool            `json:"autoreply,omitempty"`
	FeedbackType string          `json:"feedback_type,omitempty"`
	Format       string          `json:"format,omitempty"`
	MessageID    string          `json:"original_message_id,omitempty"`
	Recipients   []RecipientJSON `json:"recipients"`
}

// RecipientJSON is one recipient in FileReport.
type RecipientJSON struct {
	Recipient  string `json:"recipient"`
	Original   string `json:"original_recipient,omitempty"`
	Action     string `json:"action"`
	Status     string `json:"status"`
	Permanent  bool   `json:"permanent"`
	Hard       bool   `json:"hard"`
	Reason     Reason `json:"reason"`
	RemoteMTA  string `json:"remote_mta"`
	Diagnostic string `json:"diagnostic"`
}

// JSON returns the report in its JSON form for file.
func (r *Report) JSON(file string) FileReport {
	out := FileReport{File: file, Bounce: r.IsBounce, Complaint: r.IsComplaint, AutoReply: r.IsAutoReply,
		FeedbackType: r.FeedbackType, Format: r.Format, MessageID: r.OriginalMessageID,
		Recipients: []RecipientJSON{}}
	for _, rc := range r.Recipients {
		out.Recipients = append(out.Recipients, RecipientJSON{Recipient: rc.Recipient, Original: rc.Original, Action: rc.Action,
			Status: rc.Status, Permanent: rc.Permanent, Hard: rc.Hard, Reason: rc.Reason,
			RemoteMTA: rc.RemoteMTA, Diagnostic: rc.Diagnostic})
	}
	return out
}

// WriteJSON writes the report as one JSON object on one line.
func (r *Report) WriteJSON(w io.Writer, file string) error {
	b, err := json.Marshal(r.JSON(file))
	if err != nil {
		return fmt.Errorf("bounce: encoding report: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteText writes the report for people: one line for the file, one block
// per recipient.
func (r *Report) WriteText(w io.Writer, file string) error {
	kind := "not a bounce"
	switch {
	case r.IsComplaint:
		kind = "complaint (" + r.FeedbackType + ")"
	case r.IsAutoReply:
		kind = "auto-reply"
	case r.IsBounce:
		kind = "bounce"
	}
	if r.Format != "" {
		kind += ", " + r.Format
	}
	if _, err := fmt.Fprintf(w, "%s: %s\n", file, kind); err != nil {
		return err
	}
	for _, rc := range r.Recipients {
		sev := "temporary"
		if rc.Permanent {
			sev = "permanent"
			if rc.Hard {
				sev = "permanent, hard"
			}
		}
		_, err := fmt.Fprintf(w, "  recipient  %s\n    action     %s\n    status     %s (%s)\n    reason     %s\n",
			rc.Recipient, rc.Action, rc.Status, sev, rc.Reason)
		if err != nil {
			return err
		}
		if rc.Original != "" {
			if _, err := fmt.Fprintf(w, "    original   %s\n", rc.Original); err != nil {
				return err
			}
		}
		if rc.RemoteMTA != "" {
			if _, err := fmt.Fprintf(w, "    remote-mta %s\n", rc.RemoteMTA); err != nil {
				return err
			}
		}
		if rc.Diagnostic != "" {
			if _, err := fmt.Fprintf(w, "    diagnostic %s\n", rc.Diagnostic); err != nil {
				return err
			}
		}
	}
	return nil
}
