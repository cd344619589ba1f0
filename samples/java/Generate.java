// Load a model, stream a story to stdout, print tokens/s to stderr.
//   java -cp starkv.jar:sample-generate.jar Generate MODEL [PROMPT] [N_TOKENS]
import ai.starkv.Context;
import ai.starkv.GenerateResult;
import ai.starkv.Model;
import ai.starkv.Sampler;
import ai.starkv.StarkvException;
import ai.starkv.TokenStream;
import java.nio.file.Path;

public final class Generate {
    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: Generate MODEL [PROMPT] [N_TOKENS]");
            System.exit(2);
        }
        String prompt = args.length > 1 ? args[1] : "Once upon a time";
        int nTokens = args.length > 2 ? Integer.parseInt(args[2]) : 200;
        try (Model model = Model.load(Path.of(args[0]));
             Context ctx = model.newContext();
             Sampler greedy = Sampler.greedy();
             TokenStream story = ctx.stream(prompt, nTokens, greedy)) {
            System.out.print(prompt);
            for (String piece : story) {
                System.out.print(piece);
                System.out.flush();
            }
            System.out.println();
            GenerateResult r = story.result();
            System.err.printf("%d prompt tokens, %d generated (%.1f tokens/s), stopped by %s%n",
                    r.promptTokens(), r.generated(), r.tokensPerSecond(), r.stopReason());
        } catch (StarkvException e) {
            System.err.println("error: " + e.getMessage() + " (" + e.getStatus() + ")");
            System.exit(1);
        }
    }
}
