package harness;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.lang.reflect.Field;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import io.netty.channel.Channel;
import org.apache.tinkerpop.gremlin.server.GraphManager;
import org.apache.tinkerpop.gremlin.server.GremlinServer;
import org.apache.tinkerpop.gremlin.server.Settings;
import org.apache.tinkerpop.gremlin.structure.Edge;
import org.apache.tinkerpop.gremlin.structure.Element;
import org.apache.tinkerpop.gremlin.structure.Graph;
import org.apache.tinkerpop.gremlin.structure.Vertex;
import org.apache.tinkerpop.gremlin.tinkergraph.structure.TinkerGraph;
import org.apache.tinkerpop.gremlin.tinkergraph.structure.TinkerTransactionGraph;

/**
 * Runs a real Gremlin Server (TinkerPop 3.8) over an in-memory TinkerGraph for tests.
 *
 * <p>Usage: {@code java -cp ... harness.GremlinHarnessMain --config gremlin-server.yaml
 * --graph tinkergraph.properties [--port N] [--watch-pid PID] [--vertex-index k1,k2] [--credentials FILE]}. A port of 0
 * (the default) lets the kernel pick a free port; the actual one is reported.
 *
 * <p>{@code --vertex-index} names vertex property keys TinkerGraph indexes (equality lookups:
 * {@code g.V().has(k, v)} then reads the index instead of every vertex). TinkerGraph has no
 * remote API for this (JanusGraph and Neptune declare indexes in their own schema), so the
 * server that owns the graph creates them here, the counterpart of Cypher's CREATE INDEX.
 *
 * <p>No Groovy script engine is configured (only gremlin-lang, TinkerPop's Gremlin grammar), so
 * nothing runs Groovy: the traversal sources that requests name are bound here, in Java, instead of
 * by the usual Groovy init script: {@code g}, and {@code g_ro} (read-only) for raw text queries.
 * Bytecode without lambdas is translated with JavaTranslator.
 *
 * <p>{@code --credentials} points the configuration's authenticator (SimpleAuthenticator) at a credentials graph
 * of the caller's (a properties file, as {@link CredentialsFile} writes it).
 *
 * <p>Protocol: exactly one line {@code READY ws://127.0.0.1:<port>/gremlin} ({@code wss://} when ssl is enabled) on stdout once the port
 * is bound and {@code g} is bound (everything else goes to stderr). The server runs until stdin
 * reaches EOF (the parent closed it or died), the watched process (if any) is gone, or the JVM gets
 * SIGTERM/SIGINT.
 */
public final class GremlinHarnessMain {
    private static boolean stopped;

    private GremlinHarnessMain() {}

    public static void main(String[] args) throws Exception {
        Path config = Path.of(option(args, "--config", "gremlin-server.yaml")).toAbsolutePath();
        Path graphProps = Path.of(option(args, "--graph", "tinkergraph.properties")).toAbsolutePath();
        int port = Integer.parseInt(option(args, "--port", "0"));
        long watchPid = Long.parseLong(option(args, "--watch-pid", "0"));
        String indexed = option(args, "--vertex-index", "");
        String credentials = option(args, "--credentials", "");
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("bad port: " + port);
        }

        PrintStream protocol = System.out;
        System.setOut(System.err);

        long t0 = System.nanoTime();
        Settings settings = Settings.read(config.toString());
        settings.host = "127.0.0.1";
        settings.port = port;
        settings.graphs = Map.of("graph", graphProps.toString());
        if (!credentials.isEmpty()) { // the configuration's authenticator, over a credentials graph of the caller's
            if (settings.authentication == null || settings.authentication.authenticator == null) {
                throw new IllegalArgumentException("--credentials given, but the configuration has no authenticator");
            }
            settings.authentication.config = new java.util.HashMap<>(Map.of("credentialsDb", credentials));
        }

        GremlinServer server = new GremlinServer(settings);
        GraphManager graphs = server.getServerGremlinExecutor().getGraphManager();
        Graph graph = graphs.getGraph("graph");
        boolean anyIndex = false;
        for (String key : indexed.split(",")) {
            if (!key.isBlank()) {
                createIndex(graph, key.trim(), Vertex.class);
                anyIndex = true;
            }
        }
        if (anyIndex) {
            // TinkerPop 3.8.1 TinkerTransaction.doRollback() calls edgeIndex.rollback() when the
            // *vertex* index exists: with vertex indexes and no edge index, every rollback throws a
            // NullPointerException and leaves that worker thread's transaction open, so the next
            // request on the thread never gets an answer. An edge index (on NEIGHBOR_OF's rtt_ms)
            // keeps the edge index non-null.
            createIndex(graph, "rtt_ms", Edge.class);
        }
        graphs.putTraversalSource("g", graph.traversal());
        // what raw (text) queries run against: any mutating step is refused before it runs, and the query
        // cannot remove that guard (ReadOnlyTraversalSource refuses withoutStrategies, withComputer, io)
        graphs.putTraversalSource("g_ro", new ReadOnlyTraversalSource(graph));

        server.start().get(60, TimeUnit.SECONDS);
        int bound = boundPort(server, port);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(server), "gremlin-harness-shutdown"));
        if (watchPid > 0) {
            watchParent(watchPid);
        }

        long ms = (System.nanoTime() - t0) / 1_000_000;
        System.err.println("gremlin-harness: started in " + ms + " ms, graph " + graph.getClass().getSimpleName()
                + ", port " + bound);
        String scheme = settings.ssl != null && settings.ssl.enabled ? "wss" : "ws";
        protocol.println("READY " + scheme + "://127.0.0.1:" + bound + "/gremlin");
        protocol.flush();

        waitForStdinEof();
        System.err.println("gremlin-harness: stdin closed, shutting down");
        stop(server);
        System.exit(0);
    }

    private static <E extends Element> void createIndex(Graph graph, String key, Class<E> kind) {
        if (graph instanceof TinkerTransactionGraph) {
            ((TinkerTransactionGraph) graph).createIndex(key, kind);
        } else if (graph instanceof TinkerGraph) {
            ((TinkerGraph) graph).createIndex(key, kind);
        }
    }

    /** The port Netty bound: GremlinServer keeps its server channel private and logs the configured port. */
    private static int boundPort(GremlinServer server, int configured) throws Exception {
        Field f = GremlinServer.class.getDeclaredField("serverSocketChannel");
        f.setAccessible(true);
        Channel ch = (Channel) f.get(server);
        if (ch != null && ch.localAddress() instanceof InetSocketAddress) {
            return ((InetSocketAddress) ch.localAddress()).getPort();
        }
        if (configured == 0) {
            throw new IllegalStateException("could not learn the port the server bound");
        }
        return configured;
    }

    private static void waitForStdinEof() {
        InputStream in = System.in;
        byte[] buf = new byte[256];
        try {
            while (in.read(buf) >= 0) {
                // ignore anything written to us; only EOF matters
            }
        } catch (IOException e) {
            System.err.println("gremlin-harness: stdin error, shutting down: " + e);
        }
    }

    /** Belt and braces next to stdin EOF: exit when the parent process is gone. */
    private static void watchParent(long pid) {
        Thread t = new Thread(
                () -> {
                    while (true) {
                        boolean alive = ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false);
                        if (!alive) {
                            System.err.println("gremlin-harness: parent " + pid + " is gone, shutting down");
                            System.exit(0); // runs the shutdown hook
                        }
                        try {
                            Thread.sleep(1000);
                        } catch (InterruptedException e) {
                            return;
                        }
                    }
                },
                "gremlin-harness-parent-watch");
        t.setDaemon(true);
        t.start();
    }

    // synchronized: a second caller (shutdown hook during an EOF-triggered stop) waits for the first.
    private static synchronized void stop(GremlinServer server) {
        if (stopped) {
            return;
        }
        stopped = true;
        long t0 = System.nanoTime();
        try {
            // The graph is in memory: nothing to flush, so a bounded wait is enough.
            server.stop().get(10, TimeUnit.SECONDS);
            System.err.println("gremlin-harness: stopped in " + (System.nanoTime() - t0) / 1_000_000 + " ms");
        } catch (Throwable t) {
            System.err.println("gremlin-harness: error during shutdown: " + t);
        }
    }

    private static String option(String[] args, String flag, String dflt) {
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals(flag) && i + 1 < args.length) {
                return args[i + 1];
            }
            if (args[i].startsWith(flag + "=")) {
                return args[i].substring(flag.length() + 1);
            }
        }
        return dflt;
    }
}
