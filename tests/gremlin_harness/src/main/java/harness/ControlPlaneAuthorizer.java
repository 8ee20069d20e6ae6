package harness;

import java.util.Map;
import java.util.Optional;
import org.apache.tinkerpop.gremlin.process.traversal.Bytecode;
import org.apache.tinkerpop.gremlin.process.traversal.util.BytecodeHelper;
import org.apache.tinkerpop.gremlin.server.auth.AuthenticatedUser;
import org.apache.tinkerpop.gremlin.server.authz.AuthorizationException;
import org.apache.tinkerpop.gremlin.server.authz.Authorizer;
import org.apache.tinkerpop.gremlin.util.Tokens;
import org.apache.tinkerpop.gremlin.util.message.RequestMessage;

/**
 * What a logged-in client may ask of the control plane's Gremlin Server: bytecode traversals without lambdas
 * (the control plane's own requests, on {@code g} or {@code g_ro}), and Gremlin text in the {@code gremlin-lang}
 * grammar on {@code g_ro} only (operators' raw queries). Nothing else: no session, no other language.
 *
 * <p>Why it is needed: leaving Groovy out of {@code scriptEngines} does not take it away. Gremlin Server finds
 * script engines on its classpath (gremlin-groovy is always there: the authenticator's credentials DSL lives in
 * it), so a request naming {@code language: gremlin-groovy}, or naming no language at all (the default is
 * Groovy), or a traversal carrying a Groovy lambda, would run code in the server. Text without the alias
 * {@code g -> g_ro} would run on the writable {@code g}. This authorizer refuses all of them before anything is
 * evaluated; Gremlin Server answers 401 with the reason.
 *
 * <p>Set {@code authorization: {authorizer: harness.ControlPlaneAuthorizer}} in the server's YAML (it needs an
 * authenticator: Gremlin Server authorizes only logged-in users).
 */
public final class ControlPlaneAuthorizer implements Authorizer {

    /** the only script language: TinkerPop's Gremlin grammar, parsed, never run as code */
    public static final String TEXT_LANGUAGE = "gremlin-lang";
    public static final String READ_ONLY_SOURCE = "g_ro";
    private static final java.util.Set<String> SOURCES = java.util.Set.of("g", READ_ONLY_SOURCE);

    @Override
    public void setup(final Map<String, Object> config) {
        // nothing to configure: the rules are the control plane's
    }

    @Override
    public Bytecode authorize(final AuthenticatedUser user, final Bytecode bytecode, final Map<String, String> aliases)
            throws AuthorizationException {
        if (aliases == null || aliases.size() != 1 || !SOURCES.contains(aliases.get("g"))) {
            throw new AuthorizationException("refused for " + user.getName() + ": a traversal names the source g or "
                    + READ_ONLY_SOURCE + ", and no other (aliases " + aliases + ")");
        }
        final Optional<String> lambda = BytecodeHelper.getLambdaLanguage(bytecode);
        if (lambda.isPresent()) {
            throw new AuthorizationException("refused for " + user.getName() + ": lambdas (" + lambda.get()
                    + ") are not allowed: the server runs no script engine for them");
        }
        return bytecode;
    }

    @Override
    public void authorize(final AuthenticatedUser user, final RequestMessage msg) throws AuthorizationException {
        if (!Tokens.OPS_EVAL.equals(msg.getOp()) || !msg.getProcessor().isEmpty() || msg.getArgs().containsKey(Tokens.ARGS_SESSION)) {
            throw new AuthorizationException("refused for " + user.getName() + ": only sessionless requests are allowed (op "
                    + msg.getOp() + ", processor '" + msg.getProcessor() + "')");
        }
        final Object language = msg.getArgs().get(Tokens.ARGS_LANGUAGE);
        if (!TEXT_LANGUAGE.equals(language)) {
            throw new AuthorizationException("refused for " + user.getName() + ": script language " + language
                    + " is not allowed: no script engine runs code here; Gremlin text is " + TEXT_LANGUAGE + " only");
        }
        final Object aliases = msg.getArgs().get(Tokens.ARGS_ALIASES);
        if (!(aliases instanceof Map) || ((Map<?, ?>) aliases).size() != 1
                || !READ_ONLY_SOURCE.equals(((Map<?, ?>) aliases).get("g"))) {
            throw new AuthorizationException("refused for " + user.getName() + ": Gremlin text runs on the read-only "
                    + "source only (aliases {g: " + READ_ONLY_SOURCE + "}), not " + aliases);
        }
    }
}
