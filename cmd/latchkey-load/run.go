package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

// runOptions configure `latchkey-load run`: DNS, sink, sender and,
// optionally, the relay itself in one process.
type runOptions struct {
	send sendOptions
	// latchkeyBin runs that binary as the relay; inProcess boots the relay
	// in this process instead; with neither, send.addr is an external relay.
	latchkeyBin string
	inProcess   bool
	workdir     string
	keep        bool
	dkimAlgo    string
	policy      string
	logLevel    string
	memoryLimit string
	relayPID    int
	// External-relay mode: fixed addresses for the sink and DNS, and the
	// DKIM records the relay signs with.
	mxListen    string
	dnsListen   string
	dkimRecords []string
	verifyEvery int
	mxDefer     bool
	bulkDelay   time.Duration
	timeout     time.Duration
	settle      time.Duration
	label       string
	cpuProfile  string
	memProfile  string
	// prefillBulk bulk messages are submitted (closed loop, not measured)
	// before the measured load, which must then be resets only: the run
	// waits for the resets, not for the bulk backlog (see -bulk-delay).
	prefillBulk int
	// direct sends straight to the sink: the harness's own ceiling.
	direct bool
}

// doRun runs one measurement and returns its report. A relay it starts is
// stopped at the end; its directory is kept with -workdir or -keep.
func doRun(o runOptions) (rep RunReport, err error) {
	if o.direct {
		// Nothing signs the messages: there is nothing to verify.
		o.verifyEvery = 0
	}
	mxAddr := o.mxListen
	if mxAddr == "" {
		mxAddr = "127.0.0.2:0"
	}
	sk, err := startSink(sinkOptions{addr: mxAddr, tls: true, verifyEvery: o.verifyEvery, deferAll: o.mxDefer, bulkDelay: o.bulkDelay})
	if err != nil {
		return rep, err
	}
	defer sk.close()
	mxIP, mxPort, _ := net.SplitHostPort(sk.Addr)
	dnsAddr := o.dnsListen
	if dnsAddr == "" {
		dnsAddr = "127.0.0.1:0"
	}
	z, err := startZone(dnsAddr, fmt.Sprintf("dest.test. 300 IN MX 10 mx.dest.test.\nmx.dest.test. 300 IN A %s\n", mxIP))
	if err != nil {
		return rep, err
	}
	defer z.close()

	records := o.dkimRecords
	var proc *relayProc
	if o.latchkeyBin != "" || o.inProcess {
		dir := o.workdir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "latchkey-load-"); err != nil {
				return rep, fmt.Errorf("latchkey-load: %w", err)
			}
			if !o.keep {
				defer os.RemoveAll(dir)
			}
		}
		env, err := writeRelayEnv(relaySetup{dir: dir, dkimAlgo: o.dkimAlgo, policy: o.policy, resolver: z.Addr, mxPort: mxPort, logLevel: o.logLevel, memoryLimit: o.memoryLimit})
		if err != nil {
			return rep, err
		}
		records = append(records, env.records...)
		if o.inProcess {
			proc, err = startRelayInProcess(env)
		} else {
			proc, err = startRelayBin(o.latchkeyBin, env, 60*time.Second)
		}
		if err != nil {
			return rep, err
		}
		defer proc.stop()
		o.send.addr, o.send.user, o.send.pass, o.send.startTLS = proc.addr, env.user, env.pass, true
		if !o.inProcess {
			o.relayPID = proc.pid
		}
	}
	if o.direct {
		o.send.addr, o.send.user, o.send.pass, o.send.startTLS = sk.Addr, "", "", true
	}
	zone, txt, err := txtRecords(records)
	if err != nil {
		return rep, err
	}
	if err := z.add(zone); err != nil {
		return rep, err
	}
	sk.opts.txt = txt

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return rep, fmt.Errorf("latchkey-load: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return rep, fmt.Errorf("latchkey-load: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	var relay0 procUsage
	var peakAnon *anonPeak
	if o.relayPID != 0 {
		relay0, _ = readProc(o.relayPID)
		peakAnon = watchAnon(o.relayPID, time.Second)
	}
	self0, _ := readProc(os.Getpid())
	busy0 := machineBusy()

	rep.Label = o.label
	if o.send.rate > 0 {
		rep.Mode = fmt.Sprintf("open loop at %.0f msg/s, %d connections", o.send.rate, o.send.conns)
	} else {
		rep.Mode = fmt.Sprintf("closed loop, %d connections", o.send.conns)
	}
	if o.prefillBulk > 0 {
		pre := o.send
		pre.rate, pre.n, pre.duration, pre.bulkShare, pre.seqBase = 0, o.prefillBulk, 0, 1, 1_000_000_000
		pr, _ := runSend(pre)
		fmt.Fprintf(os.Stderr, "latchkey-load: prefill: %d bulk messages accepted in %.1fs (%d failed)\n", pr.Accepted, pr.Seconds, pr.Failed)
		o.send.bulkShare = 0
	}
	var start time.Time
	rep.Send, start = runSend(o.send)
	if o.prefillBulk > 0 {
		if !sk.waitClass("reset", rep.Send.Accepted, o.timeout) {
			fmt.Fprintf(os.Stderr, "latchkey-load: not every reset arrived within %v\n", o.timeout)
		}
	} else if o.mxDefer {
		time.Sleep(o.settle)
	} else if !sk.wait(rep.Send.Accepted, o.timeout) {
		fmt.Fprintf(os.Stderr, "latchkey-load: only %d of %d accepted messages arrived within %v\n", sk.count(), rep.Send.Accepted, o.timeout)
	}
	busy1 := machineBusy()
	self1, _ := readProc(os.Getpid())
	rep.Sink = sk.report(start)
	if rep.Sink.Seconds > 0 {
		rep.E2EMsgPerSec = rep.Sink.MsgPerSec
	}
	msgs := float64(rep.Sink.E2E.N)
	if o.mxDefer {
		msgs = float64(rep.Send.Accepted)
	}
	u := &RelayUsage{PID: o.relayPID, MachineCPUSecs: (busy1 - busy0) - (self1.cpu - self0.cpu)}
	if o.inProcess {
		u.MachineCPUSecs = busy1 - busy0
	}
	if o.relayPID != 0 {
		if r1, err := readProc(o.relayPID); err == nil {
			u.CPUSeconds, u.RSSMB, u.MaxRSSMB = r1.cpu-relay0.cpu, r1.rssMB, r1.maxRSSMB
			u.AnonMB, u.FileMB = r1.anonMB, r1.fileMB
		}
		u.MaxAnonMB = peakAnon.stop()
	}
	if msgs > 0 {
		u.CPUPerMsgMs = u.CPUSeconds * 1000 / msgs
		u.MachinePerMsg = u.MachineCPUSecs * 1000 / msgs
		u.ToolPerMsg = (self1.cpu - self0.cpu) * 1000 / msgs
	}
	rep.Relay = u
	if o.memProfile != "" {
		// After a GC, so that the profile shows what is live, not garbage.
		runtime.GC()
		f, err := os.Create(o.memProfile)
		if err != nil {
			return rep, fmt.Errorf("latchkey-load: %w", err)
		}
		err = pprof.WriteHeapProfile(f)
		f.Close()
		if err != nil {
			return rep, fmt.Errorf("latchkey-load: %w", err)
		}
		// Goroutine stacks are memory too, and a leak shows here first.
		if g, err := os.Create(o.memProfile + ".goroutine"); err == nil {
			pprof.Lookup("goroutine").WriteTo(g, 1)
			g.Close()
		}
	}
	// The verifier finishes before the report's DKIM figures are final.
	sk.close()
	fin := sk.report(start)
	rep.Sink.DKIMOK, rep.Sink.DKIMFail, rep.Sink.FirstFail = fin.DKIMOK, fin.DKIMFail, fin.FirstFail
	return rep, nil
}
