package harness;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.lang.reflect.Method;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Runs a server's own main class in this JVM, tied to the test process that started it.
 *
 * <p>Usage: {@code java -cp lifeline:server-jars harness.Lifeline [--watch-pid PID]
 * [--ready host:port[,host:port...]] -- some.server.Main args...}
 *
 * <p>Servers such as Cassandra's daemon and JanusGraph Server know nothing of tests: they run until
 * killed and report readiness only in their logs. This wrapper gives each of them what the test
 * harness (tests/jvm_harness/process.py) relies on for every JVM it starts:
 * <ul>
 *   <li>exactly one line {@code READY host:port} on stdout once every {@code --ready} address
 *       accepts TCP connections;</li>
 *   <li>the JVM exits (running the server's shutdown hooks) when its stdin reaches EOF, i.e. the
 *       parent closed it or died, or when the watched process is gone: no JVM outlives its test run.</li>
 * </ul>
 */
public final class Lifeline {
    private Lifeline() {}

    public static void main(String[] args) throws Exception {
        int split = Arrays.asList(args).indexOf("--");
        if (split < 0 || split + 1 >= args.length) {
            throw new IllegalArgumentException("usage: Lifeline [--watch-pid PID] [--ready host:port,...] -- Main args...");
        }
        String[] own = Arrays.copyOfRange(args, 0, split);
        String mainClass = args[split + 1];
        String[] serverArgs = Arrays.copyOfRange(args, split + 2, args.length);
        long watchPid = Long.parseLong(option(own, "--watch-pid", "0"));
        String ready = option(own, "--ready", "");

        PrintStream protocol = System.out;
        System.setOut(System.err); // the server's own prints must not look like protocol lines
        daemon("lifeline-stdin", Lifeline::exitOnStdinEof);
        if (watchPid > 0) {
            daemon("lifeline-parent", () -> exitWhenGone(watchPid));
        }
        if (!ready.isBlank()) {
            List<InetSocketAddress> addresses = new ArrayList<>();
            for (String hp : ready.split(",")) {
                int colon = hp.lastIndexOf(':');
                addresses.add(new InetSocketAddress(hp.substring(0, colon), Integer.parseInt(hp.substring(colon + 1))));
            }
            daemon("lifeline-ready", () -> announceWhenListening(addresses, protocol));
        }
        Method main = Class.forName(mainClass).getMethod("main", String[].class);
        main.invoke(null, (Object) serverArgs);
    }

    private static void announceWhenListening(List<InetSocketAddress> addresses, PrintStream protocol) {
        for (InetSocketAddress a : addresses) {
            while (!listening(a)) {
                sleep(100);
            }
        }
        InetSocketAddress first = addresses.get(0);
        protocol.println("READY " + first.getHostString() + ":" + first.getPort());
        protocol.flush();
    }

    private static boolean listening(InetSocketAddress a) {
        try (Socket s = new Socket()) {
            s.connect(a, 500);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static void exitOnStdinEof() {
        InputStream in = System.in;
        byte[] buf = new byte[256];
        try {
            while (in.read(buf) >= 0) {
                // only EOF matters
            }
        } catch (IOException e) {
            // treated as EOF
        }
        System.err.println("lifeline: stdin closed, shutting down");
        System.exit(0);
    }

    private static void exitWhenGone(long pid) {
        while (ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
            sleep(1000);
        }
        System.err.println("lifeline: parent " + pid + " is gone, shutting down");
        System.exit(0);
    }

    private static void daemon(String name, Runnable body) {
        Thread t = new Thread(body, name);
        t.setDaemon(true);
        t.start();
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static String option(String[] args, String flag, String dflt) {
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals(flag) && i + 1 < args.length) {
                return args[i + 1];
            }
        }
        return dflt;
    }
}
