package harness;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
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
 * reported. The database lives in a random subdirectory of the working directory, which the harness
 * deletes on shutdown.
 *
 * <p>Protocol: exactly one line {@code READY bolt://127.0.0.1:<port>} on stdout once Bolt accepts
 * connections (everything else goes to stderr). The server runs until stdin reaches EOF (the parent
 * closed it or died), the watched process (if any) is gone, or the JVM gets SIGTERM/SIGINT; in every
 * case it is shut down cleanly by the same (idempotent) stop routine.
 */
public final class Neo4jHarnessMain {
    private static boolean stopped;

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

        long t0 = System.nanoTime();
        Neo4j neo4j = Neo4jBuilders.newInProcessBuilder(workdir)
                // Sets server.http(s).enabled=false: no Jetty, no HTTP port.
                .withDisabledServer()
                // The harness already defaults to auth off and Bolt on; repeated here to be explicit.
                .withConfig(GraphDatabaseSettings.auth_enabled, false)
                .withConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .withConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .withConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .withConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(pageCacheMb))
                .withConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .withConfig(GraphDatabaseSettings.udc_enabled, false)
                // Netty's graceful shutdown waits a 5 s quiet period twice (boss + worker
                // groups): 10 s per stop. Tests do not need that grace.
                .withConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .withConfig(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(5))
                .build();

        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(neo4j), "neo4j-harness-shutdown"));

        if (watchPid > 0) {
            watchParent(watchPid);
        }

        URI bolt = neo4j.boltURI();
        long ms = (System.nanoTime() - t0) / 1_000_000;
        System.err.println("neo4j-harness: started in " + ms + " ms, bolt port " + bolt.getPort());
        protocol.println("READY bolt://127.0.0.1:" + bolt.getPort());
        protocol.flush();

        waitForStdinEof();
        System.err.println("neo4j-harness: stdin closed, shutting down");
        stop(neo4j);
        System.exit(0);
    }

    private static void waitForStdinEof() {
        InputStream in = System.in;
        byte[] buf = new byte[256];
        try {
            while (in.read(buf) >= 0) {
                // ignore anything written to us; only EOF matters
            }
        } catch (IOException e) {
            System.err.println("neo4j-harness: stdin error, shutting down: " + e);
        }
    }

    /** Belt and braces next to stdin EOF: exit when the parent process is gone. */
    private static void watchParent(long pid) {
        Thread t = new Thread(
                () -> {
                    while (true) {
                        boolean alive = ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false);
                        if (!alive) {
                            System.err.println("neo4j-harness: parent " + pid + " is gone, shutting down");
                            System.exit(0); // runs the shutdown hook
                        }
                        try {
                            Thread.sleep(1000);
                        } catch (InterruptedException e) {
                            return;
                        }
                    }
                },
                "neo4j-harness-parent-watch");
        t.setDaemon(true);
        t.start();
    }

    // synchronized: a second caller (shutdown hook during an EOF-triggered stop) waits for the first.
    private static synchronized void stop(Neo4j neo4j) {
        if (stopped) {
            return;
        }
        stopped = true;
        long t0 = System.nanoTime();
        try {
            neo4j.close();
            System.err.println(
                    "neo4j-harness: stopped in " + (System.nanoTime() - t0) / 1_000_000 + " ms");
        } catch (Throwable t) {
            System.err.println("neo4j-harness: error during shutdown: " + t);
            t.printStackTrace(System.err);
        }
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
