package harness;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import inet.ipaddr.IPAddressString;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilders;
import org.neo4j.io.ByteUnit;

/**
 * Runs a real, in-process Neo4j (the neo4j-harness server) for tests.
 *
 * <p>Usage: {@code java -cp ... harness.Neo4jHarnessMain [--port N] [--workdir DIR]
 * [--pagecache SIZE_MB] [--watch-pid PID]}; the environment variables NEO4J_HARNESS_PORT,
 * NEO4J_HARNESS_WORKDIR, NEO4J_HARNESS_PAGECACHE_MB and NEO4J_HARNESS_WATCH_PID are used when the
 * flags are absent. A port of 0 (the default) lets the kernel pick a free port; the actual one is
 * reported. The database lives in a random (32 hex chars) subdirectory of the working directory,
 * which the harness deletes on a clean shutdown.
 *
 * <p>Protocol: exactly one line {@code READY bolt://127.0.0.1:<port>} on stdout once Bolt accepts
 * connections (everything else goes to stderr). The server runs until stdin reaches EOF (the parent
 * closed it or died), the watched process (if any) is gone, or the JVM gets SIGTERM/SIGINT; in every
 * case the JVM exits through one shutdown hook that closes the server cleanly. EOF during startup
 * aborts the startup.
 */
public final class Neo4jHarnessMain {
    private static final Object LOCK = new Object();
    private static Neo4j server; // guarded by LOCK
    private static boolean stopping; // guarded by LOCK

    private Neo4jHarnessMain() {}

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(option(args, "--port", "NEO4J_HARNESS_PORT", "0"));
        Path workdir = Path.of(option(args, "--workdir", "NEO4J_HARNESS_WORKDIR", "target/neo4j-work"))
                .toAbsolutePath();
        long pageCacheMb = Long.parseLong(option(args, "--pagecache", "NEO4J_HARNESS_PAGECACHE_MB", "128"));
        long watchPid = Long.parseLong(option(args, "--watch-pid", "NEO4J_HARNESS_WATCH_PID", "0"));
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("bad port: " + port);
        }
        Files.createDirectories(workdir);

        // Keep stdout for the protocol line only; anything library code prints goes to stderr.
        PrintStream protocol = System.out;
        System.setOut(System.err);

        Runtime.getRuntime().addShutdownHook(new Thread(Neo4jHarnessMain::stop, "neo4j-harness-shutdown"));
        daemon("neo4j-harness-stdin", Neo4jHarnessMain::exitOnStdinEof);
        if (watchPid > 0) {
            daemon("neo4j-harness-parent-watch", () -> exitWhenGone(watchPid));
        }

        long t0 = System.nanoTime();
        Neo4j neo4j;
        try {
            neo4j = start(workdir, port, pageCacheMb);
        } catch (Throwable t) {
            System.err.println("neo4j-harness: failed to start Neo4j");
            t.printStackTrace(System.err);
            System.exit(1); // do not linger on non-daemon threads of a half-started server
            return;
        }
        synchronized (LOCK) {
            if (stopping) { // shutdown began while we were starting
                neo4j.close();
                return;
            }
            server = neo4j;
        }

        URI bolt = neo4j.boltURI();
        long ms = (System.nanoTime() - t0) / 1_000_000;
        System.err.println("neo4j-harness: started in " + ms + " ms, bolt port " + bolt.getPort());
        protocol.println("READY bolt://127.0.0.1:" + bolt.getPort());
        protocol.flush();

        new CountDownLatch(1).await(); // until System.exit from a watcher or a signal
    }

    private static Neo4j start(Path workdir, int port, long pageCacheMb) {
        return Neo4jBuilders.newInProcessBuilder(workdir)
                // Sets server.http.enabled=false and server.https.enabled=false: no Jetty, no HTTP port.
                .withDisabledServer()
                // The harness already defaults to auth off; repeated here to be explicit.
                .withConfig(GraphDatabaseSettings.auth_enabled, false)
                .withConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .withConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .withConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .withConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(pageCacheMb))
                .withConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .withConfig(GraphDatabaseSettings.udc_enabled, false)
                // Raw queries run in READ mode, but LOAD CSV is a read: without these it reads any file
                // of the server (file:///etc/passwd) and fetches any URL. No file URLs, no remote address.
                .withConfig(GraphDatabaseSettings.allow_file_urls, false)
                .withConfig(GraphDatabaseInternalSettings.cypher_ip_blocklist,
                        List.of(new IPAddressString("0.0.0.0/0"), new IPAddressString("::/0")))
                // Netty's graceful shutdown waits a 5 s quiet period twice (boss + worker
                // event loop groups): 10 s per stop. Tests do not need that grace.
                .withConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .withConfig(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(5))
                .build();
    }

    /** The one shutdown path (shutdown hook); idempotent. */
    private static void stop() {
        Neo4j neo4j;
        synchronized (LOCK) {
            if (stopping) {
                return;
            }
            stopping = true;
            neo4j = server;
            server = null;
        }
        if (neo4j == null) {
            System.err.println("neo4j-harness: exiting before the server was up");
            return;
        }
        long t0 = System.nanoTime();
        try {
            neo4j.close();
            System.err.println("neo4j-harness: stopped in " + (System.nanoTime() - t0) / 1_000_000 + " ms");
        } catch (Throwable t) {
            System.err.println("neo4j-harness: error during shutdown: " + t);
            t.printStackTrace(System.err);
        }
    }

    private static void exitOnStdinEof() {
        InputStream in = System.in;
        byte[] buf = new byte[256];
        try {
            while (in.read(buf) >= 0) {
                // ignore anything written to us; only EOF matters
            }
            System.err.println("neo4j-harness: stdin closed, shutting down");
        } catch (IOException e) {
            System.err.println("neo4j-harness: stdin error, shutting down: " + e);
        }
        System.exit(0); // runs the shutdown hook
    }

    /** Belt and braces next to stdin EOF: exit when the parent process is gone. */
    private static void exitWhenGone(long pid) {
        while (ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
            try {
                Thread.sleep(1000);
            } catch (InterruptedException e) {
                return;
            }
        }
        System.err.println("neo4j-harness: parent " + pid + " is gone, shutting down");
        System.exit(0);
    }

    private static void daemon(String name, Runnable body) {
        Thread t = new Thread(body, name);
        t.setDaemon(true);
        t.start();
    }

    private static String option(String[] args, String flag, String env, String dflt) {
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals(flag) && i + 1 < args.length) {
                return args[i + 1];
            }
            if (args[i].startsWith(flag + "=")) {
                return args[i].substring(flag.length() + 1);
            }
        }
        String v = System.getenv(env);
        return v != null && !v.isEmpty() ? v : dflt;
    }
}
